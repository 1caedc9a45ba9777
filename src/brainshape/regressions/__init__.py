"""Aggregate analyses: explain brainscores from shape features, and compare variants.

One ordinary least-squares regression per stratum x ROI x hemisphere x feature set predicts the
brainscore of each observation (a model variant's layer, or its best layer) from its shape
features, with cross-validation that keeps a model *family* together, beside a nuisance model
(depth, size, variant kind) and the gain of the set over it. Module by module:

- :mod:`~brainshape.regressions.inputs`: observations: scores beside features and nuisance columns;
- :mod:`~brainshape.regressions.crossval`: family-grouped folds and cross-validated R^2;
- :mod:`~brainshape.regressions.permutation`: the permutation nulls of the set and of the gain;
- :mod:`~brainshape.regressions.bootstrap`: intervals of the coefficients;
- :mod:`~brainshape.regressions.fitting`: one regression, and all of a table;
- :mod:`~brainshape.regressions.variants`: variants against their twins, scaling with size;
- :mod:`~brainshape.regressions.figures`: the report's figures.

Methods, and why each choice: docs/methods.md.
"""

from brainshape.regressions.crossval import cv_r2, group_folds
from brainshape.regressions.figures import plot_contrasts, plot_regressions, plot_scaling
from brainshape.regressions.fitting import (
    FEATURE_COLUMNS,
    REGRESSION_COLUMNS,
    WEIGHTS,
    Fit,
    fit,
    row_weights,
    run_regressions,
)
from brainshape.regressions.inputs import (
    NUISANCE,
    PUBLISHED_COLUMNS,
    UNITS,
    UNTRAINED,
    crossfit_observations,
    depth_basis,
    feature_columns,
    landmark_reliability,
    nuisance_columns,
    observations,
    parameter_counts,
    read_published,
)
from brainshape.regressions.permutation import (
    PERMUTATIONS,
    depth_blocks,
    permutation_orders,
    permuted_residuals,
)
from brainshape.regressions.variants import contrasts, scaling_table

__all__ = [
    "FEATURE_COLUMNS", "Fit", "NUISANCE", "PERMUTATIONS", "PUBLISHED_COLUMNS",
    "REGRESSION_COLUMNS", "UNITS", "UNTRAINED", "WEIGHTS", "contrasts", "crossfit_observations",
    "cv_r2", "depth_basis", "depth_blocks", "feature_columns", "fit", "group_folds",
    "landmark_reliability", "nuisance_columns", "observations", "parameter_counts",
    "permutation_orders", "permuted_residuals", "plot_contrasts", "plot_regressions",
    "plot_scaling", "read_published", "row_weights", "run_regressions", "scaling_table",
]  # fmt: skip
