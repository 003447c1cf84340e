"""Maps that explain a model: the model made explainable (explainable), CAM methods (cams),
captum attributions and head maps (attributions), the randomization sanity check (sanity),
maps computed once per run and read by everything else (stored), deletion/insertion and ROAD
faithfulness of the stored maps (faithfulness).

May import: training and every earlier stage.
"""
