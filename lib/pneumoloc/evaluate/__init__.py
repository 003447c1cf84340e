"""Pure classification metrics on arrays: ROC/PR curves, operating points and metrics with
CIs (classification), the patient bootstrap and percentile intervals (bootstrap), DeLong's
test (delong), calibration (calibration).

May import: data and the root modules. It sits before models so that training (best.pt by
validation ROC-AUC) and localize (intervals by patient bootstrap) use the same functions.
"""
