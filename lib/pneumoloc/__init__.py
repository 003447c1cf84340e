"""pneumoloc: weakly supervised pneumonia localization on chest X-rays.

The library is grouped by pipeline stage; imports flow one way, down this list
(``tests/test_architecture.py`` checks it):

    environment, storage, registry   paths and run folders, device, provenance; atomic
                                     artifacts; the one registry helper
    data        manifest tables, readers, decoding, cache, splits, torchxrayvision's assets
    phantom     the generated default dataset
    evaluate    classification metrics, patient bootstrap, DeLong, calibration
    models      backbone registry, backbones, heads, weights, checkpoints, model kinds
    training    the recipe, batches, transforms, losses, the loop
    explain     the model to explain, CAM methods, attributions, sanity check, stored maps
    localize    localization metrics, boxes, thresholds, chance maps, lung masks, notebook 04
    ensembles   combiners, diversity, efficiency, notebook 05
    plots       save_figure and every figure; the widget browser
    runs        run specs, notebook parameters, the runner
    cli         the ``pneumoloc`` command

The package is imported by every notebook kernel, so importing it stays cheap:
heavy libraries (torch, timm, grad-cam, captum) are imported inside the modules
and functions that use them, never here.
"""
__version__ = "0.1.0"
__all__ = ["__version__"]
