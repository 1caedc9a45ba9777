"""The study one validated config describes: datasets, their subjects and stories, and the models
and variants that run on them.

:class:`Study` answers *what* exists (which subjects heard which stories, which variants of which
models are selected, which subjects share one encode job). It knows no output paths: the rule that
writes a file spells its path, and ``workflow/rules/common.smk`` fills wildcards from what this
class returns. What each job computes with is in :mod:`brainshape.params`, how large each job is
in :mod:`brainshape.sizing`, and what is checked before anything runs in :mod:`brainshape.checks`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brainshape import demo, fmri, models
from brainshape.errors import BrainshapeError


def suggest(name: str, known: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known``, or an empty string."""
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Study:
    """Datasets, models and variants of one validated configuration.

    ``config`` and ``registry`` are the mappings after schema validation (defaults filled);
    ``source`` names the config file(s) in error messages.
    """

    def __init__(self, config: Mapping[str, Any], registry: Mapping[str, Any], source: str):
        self.config = config
        self.registry = registry["models"]
        self.source = source
        self._models = self._select_models()

    # --- models and variants -------------------------------------------------------------------

    def _select_models(self) -> dict[str, list[str]]:
        known = list(self.registry)
        wanted = known if self.config["models"] == "all" else list(self.config["models"])
        selected: dict[str, list[str]] = {}
        for name in wanted:
            if name not in self.registry:
                raise BrainshapeError(
                    f"{self.source}: models lists unknown model id '{name}'"
                    f"{suggest(name, known)}; the registry {self.config['registry']} has: "
                    f"{', '.join(known)}"
                )
            variants = list(self.registry[name]["variants"])
            if self.config["variants"] != "all":
                variants = [v for v in self.config["variants"] if v in variants]
            if variants:
                selected[name] = variants
        if self.config["variants"] != "all":
            everywhere = {v for e in self.registry.values() for v in e["variants"]}
            for v in self.config["variants"]:
                if v not in everywhere:
                    raise BrainshapeError(
                        f"{self.source}: variants lists '{v}', which no registry entry has"
                        f"{suggest(v, sorted(everywhere))}"
                    )
        if not selected:
            raise BrainshapeError(f"{self.source}: the models/variants selection is empty")
        return selected

    def models(self) -> list[str]:
        return list(self._models)

    def variants(self, model: str) -> list[str]:
        return self._models[model]

    def model_variants(self) -> list[tuple[str, str]]:
        return [(m, v) for m, vs in self._models.items() for v in vs]

    def entry(self, model: str) -> Mapping[str, Any]:
        """The registry entry of ``model``, defaults filled."""
        return self.registry[model]

    def settings(self, model: str, variant: str) -> Mapping[str, Any]:
        """The registry settings of one variant (``kind``, ``dtype``, ...)."""
        return self.registry[model]["variants"][variant]

    def kind(self, model: str, variant: str) -> models.VariantKind:
        """The :class:`models.VariantKind` of one variant."""
        return models.variant_kind(self.settings(model, variant)["kind"])

    def is_prepared(self, model: str) -> bool:
        """Whether the workflow materialises the model itself (rule prepare_model)."""
        return self.registry[model]["source"]["kind"] in models.PREPARED_SOURCES

    def is_quantized_here(self, model: str, variant: str) -> bool:
        """Whether the variant is quantised by the workflow (rule quantize_model)."""
        return self.kind(model, variant).quantized_here(self.settings(model, variant))

    def families(self) -> dict[str, str]:
        return {m: self.registry[m]["family"] for m in self.models()}

    def default_variant(self, model: str) -> str:
        """The model's first trained full-precision variant (else its first variant): the one
        that published scores without a variant column are matched to."""
        for v in self.variants(model):
            if self.settings(model, v)["kind"] == "full":
                return v
        return self.variants(model)[0]

    # --- datasets --------------------------------------------------------------------------------

    @property
    def datasets(self) -> dict[str, dict]:
        return self.config["datasets"]

    def dataset(self, name: str) -> dict:
        return self.datasets[name]

    def is_demo(self, ds: str) -> bool:
        return bool(self.dataset(ds)["demo"])

    def root(self, ds: str) -> Path:
        return Path(self.dataset(ds)["bids_root"])

    def under_root(self, ds: str, path: str) -> Path:
        """``path`` relative to the dataset's ``bids_root`` unless it is absolute."""
        p = Path(path)
        return p if p.is_absolute() else self.root(ds) / p

    def fmriprep_dir(self, ds: str) -> Path:
        return self.under_root(ds, self.dataset(ds)["fmriprep_dir"])

    def atlas(self, ds: str) -> dict[str, Path]:
        """The atlas label image and its labels TSV (the demo generator writes its own)."""
        spec = self.dataset(ds).get("atlas")
        if spec is None and self.is_demo(ds):
            spec = {"image": demo.ATLAS_IMAGE, "labels": demo.ATLAS_LABELS}
        if spec is None:
            raise BrainshapeError(
                f"{self.source}: datasets.{ds}.atlas is missing; give the atlas "
                "label image and its labels TSV (columns index, name)"
            )
        return {k: self.under_root(ds, spec[k]) for k in ("image", "labels")}

    def subjects(self, ds: str) -> list[str]:
        return list(self.dataset(ds)["subjects"])

    def stories(self, ds: str) -> list[str]:
        return list(self.dataset(ds)["stories"])

    def word_file(self, ds: str, story: str) -> Path:
        return self.under_root(ds, self.dataset(ds)["words"]["path"].format(story=story))

    def run_paths(self, ds: str, sub: str, story: str) -> fmri.RunPaths:
        """The fMRIPrep derivatives of one subject's run of one story."""
        return fmri.bids_paths(self.fmriprep_dir(ds), sub, story, self.dataset(ds)["space"])

    # --- encode jobs ---------------------------------------------------------------------------

    def subject_groups(self, ds: str) -> dict[str, list[str]]:
        """Subjects of ``ds`` in groups of ``encoding.group_size`` (names g1, g2, ...).

        Every subject of a dataset heard its stories, so any group shares one design; one encode
        job per group keeps the study's job count at models x variants x groups.
        """
        subs = self.subjects(ds)
        size = self.config["encoding"]["group_size"]
        return {f"g{i // size + 1}": subs[i : i + size] for i in range(0, len(subs), size)}

    def group_subjects(self, ds: str, group: str) -> list[str]:
        groups = self.subject_groups(ds)
        if group not in groups:
            raise BrainshapeError(
                f"datasets.{ds} has subject groups {', '.join(groups)}, not '{group}' "
                "(encoding.group_size sets them)"
            )
        return groups[group]

    # --- the shape stage and the regressions ------------------------------------------------------

    def regressions_planned(self) -> bool:
        """Family-grouped cross-validation needs two model families (published scores too are
        matched to the selected models): with one, the shape table is made, the regressions
        are not."""
        return len(set(self.families().values())) >= 2

    def published_scores(self) -> Path | None:
        path = self.config["regressions"]["published_scores"]
        return Path(path) if path else None
