"""How well maps localize: per-image metrics (metrics: LAR, pointing game, energy, IoU/Dice;
auprc), the map array form (arrays), ground truth at map size (ground_truth), boxes from maps
(boxes), the RSNA challenge metric (rsna), the ChestX-ray8 box protocol (chestxray8),
thresholds, chance maps (chance), lung-mask sources (lung_sources, lung_atlas), notebook 04's
report and tables (report, tables), notebook 06's shortcut study (shortcut).

May import: explain and every earlier stage.
"""
