"""Units and constants (docs/physics.md section 2).

raytrack's internal units: lengths in mm, momenta in MeV (so q/p in 1/MeV), fields in tesla.
"""

#: Curvature constant for q/p in 1/MeV, B in tesla, lengths in mm: d(slope)/dz = KAPPA * qop * B.
#: 1 GeV in 1 T bends with radius 1 / (KAPPA * 1e-3) = 3335.6 mm. (2.998e-4 is the value for
#: q/p in 1/GeV, wrong with q/p in 1/MeV: docs/physics.md section 2.)
KAPPA = 0.299792458

MEV_PER_GEV = 1000.0
MM_PER_CM = 10.0
MM_PER_M = 1000.0
TESLA = 1.0
GAUSS = 1e-4  # tesla

FIELD_UNITS = {"T": TESLA, "tesla": TESLA, "gauss": GAUSS, "G": GAUSS}
LENGTH_UNITS = {"mm": 1.0, "cm": MM_PER_CM, "m": MM_PER_M}
