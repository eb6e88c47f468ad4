"""drus's own defaults where they differ from the paper, and the demo's settings, declared once (no heavy
imports: the CLI reads them).

Each was chosen on simulations and the simulated PICMUS sets, never on EC/ER or in vivo data; how
is in docs/realdata.md. ``drus reconstruct --paper`` and ``drus evaluate picmus --paper`` restore the
paper's configuration.
"""

#: Fraction of the operator's components that the prior decides (:func:`drus.sampling.scaling.regularised_sigma0`).
#: Swept over {0, 0.4, 0.6, 0.8} on SC, SC's phantom through drus's ``H`` with channel noise, and
#: SC's phantom on the unknown grid: 0.6 gave the best DRUSvar gCNR on all three.
PRIOR_FRACTION = 0.6

#: Side of the pooling neighbourhood of :func:`drus.sampling.estimators.drus_var_pooled`, in m: one lateral
#: resolution cell of single-plane-wave DAS (its −6 dB width on the simulated set SR, 0.84 mm), rounded.
POOL_WIDTH = 0.85e-3

# --- drus demo (drus.pipelines.demo), declared here so that the CLI shows them without importing torch ---
#: Its speckle, noise and sampler seed: seeds from 1000 on are never used by the shipped prior's
#: training, whose synthetic images are seeded from 0 (held-out test images).
DEMO_SEED = 1000
#: Its noise level γ (the paper's lower level of Sect. III) and grid side over the paper's field of view.
DEMO_GAMMA, DEMO_SIZE = 0.02, 256
#: Its plane-wave panel's pixels along the depth (96: 64 × 96 unknowns of 0.15 mm).
DEMO_PLANE_WAVE_SIZE = 96

# --- ADMSS (drus.evaluation.despeckle.admss): the DRUS authors' parameters, declared here so that
# ``drus despeckle`` shows them without importing the filter ---
#: Structure-tensor scales σ and ρ (pixels), diffusion steps, memory n of the delay equation, time step Δt.
ADMSS_SIGMA, ADMSS_RHO, ADMSS_ITERATIONS, ADMSS_MEMORY, ADMSS_DT = 4.0, 4.0, 31, 9, 0.3
