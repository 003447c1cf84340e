"""Pure classification metrics on arrays: ROC/PR curves and operating points, the patient
bootstrap, DeLong's test, calibration.

Imports only the root modules, so every later stage (training picks best.pt by its
ROC-AUC; localize's intervals use its bootstrap) can use it.
"""
