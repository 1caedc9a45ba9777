"""The shape of representations: point clouds, persistence diagrams, geometry and their nulls.

The stage, module by module (each rule's script imports only the modules it needs, so that a
change to one part reruns only the jobs that use it):

- :mod:`~brainshape.topology.timebase`: the volumes every cloud of a dataset is taken at (the
  time base and its landmarks);
- :mod:`~brainshape.topology.clouds`: layer and brain clouds on that time base, standardised and
  scale-normalised (:func:`prepare`);
- :mod:`~brainshape.topology.persistence`: Vietoris-Rips diagrams, Wasserstein distances,
  diagram summaries;
- :mod:`~brainshape.topology.measures`: geometry measures between two clouds (RSA, debiased
  CKA, Procrustes, CKA);
- :mod:`~brainshape.topology.dimension`: how many directions a cloud fills (participation
  ratio, TwoNN);
- :mod:`~brainshape.topology.nulls`: each geometry value against brain clouds moved in time
  (stories permuted, or shifted within stories), and the clouds' autocorrelation time;
- :mod:`~brainshape.topology.brain`, :mod:`~brainshape.topology.layers`,
  :mod:`~brainshape.topology.pairs`: the jobs (brain clouds, layer diagrams, pairings);
- :mod:`~brainshape.topology.figures`: the report's figure.

Methods, and why each choice: docs/methods.md.
"""

from brainshape.topology.brain import compute_brain
from brainshape.topology.clouds import (
    METRICS,
    Cloud,
    brain_clouds,
    distances,
    embed,
    landmark_resamplers,
    layer_cloud,
    prepare,
    standardize,
    time_base_resamplers,
)
from brainshape.topology.dimension import DIMENSIONS, participation_ratio, twonn
from brainshape.topology.figures import plot_agreement
from brainshape.topology.layers import compute_layers
from brainshape.topology.measures import (
    MEASURES,
    Measure,
    cka,
    cka_debiased,
    hsic_unbiased,
    procrustes,
    rsa,
)
from brainshape.topology.nulls import (
    MIN_SHIFT_S,
    SCHEMES,
    NullPlan,
    NullSettings,
    against_null,
    autocorrelation,
    autocorrelation_time,
    null_columns,
    null_settings,
    plan_null,
)
from brainshape.topology.pairs import check_settings, pair_variant, wasserstein_column
from brainshape.topology.persistence import (
    BACKENDS,
    SUMMARIES,
    bar_count,
    betti_argpeak,
    betti_peak,
    diagram_summaries,
    diagrams,
    load_diagrams,
    longest_bar,
    persistent_entropy,
    save_diagrams,
    total_persistence,
    wasserstein,
)
from brainshape.topology.timebase import (
    TimeBase,
    base_members,
    landmarks,
    read_time_base,
    shared_time_base,
    write_time_base,
)

__all__ = [
    "BACKENDS", "Cloud", "DIMENSIONS", "MEASURES", "METRICS", "MIN_SHIFT_S", "Measure", "NullPlan",
    "NullSettings", "SCHEMES", "SUMMARIES", "TimeBase", "against_null", "autocorrelation",
    "autocorrelation_time", "bar_count", "base_members", "betti_argpeak", "betti_peak",
    "brain_clouds", "check_settings", "cka", "cka_debiased", "compute_brain", "compute_layers",
    "diagram_summaries", "diagrams", "distances", "embed", "hsic_unbiased", "landmark_resamplers",
    "landmarks", "layer_cloud", "load_diagrams", "longest_bar", "null_columns", "null_settings",
    "pair_variant", "participation_ratio", "persistent_entropy", "plan_null", "plot_agreement",
    "prepare", "procrustes", "read_time_base", "rsa", "save_diagrams", "shared_time_base",
    "standardize", "time_base_resamplers", "total_persistence", "twonn", "wasserstein",
    "wasserstein_column", "write_time_base",
]  # fmt: skip
