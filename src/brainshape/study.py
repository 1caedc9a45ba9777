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
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from brainshape import demo, fmri, models, responses, sheet
from brainshape.config import SCHEMAS
from brainshape.errors import BrainshapeError


def suggest(name: str, known: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known``, or an empty string."""
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Study:
    """Datasets, models and variants of one validated configuration.

    ``config`` and ``registry`` are the mappings after schema validation (defaults filled);
    ``source`` names the config file(s) in error messages; ``schemas`` is the workflow's
    schema folder (for the runs sheet's).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        registry: Mapping[str, Any],
        source: str,
        schemas: str | Path = SCHEMAS,
    ):
        self.config = config
        self.runs_schema = Path(schemas) / "runs.schema.yaml"
        self.registry = registry["models"]
        self.source = source
        self._models = self._select_models()
        self._runs: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
        self._memo: dict[tuple[str, str], Any] = {}

    # --- models and variants -------------------------------------------------------------------

    def _select_models(self) -> dict[str, list[str]]:
        known = list(self.registry)
        wanted = known if self.config["models"] == "all" else list(self.config["models"])
        chosen = self.config["variants"]
        per_model = chosen if isinstance(chosen, Mapping) else {}
        for name in [*wanted, *per_model]:
            if name not in self.registry:
                key = "models" if name in wanted else "variants"
                raise BrainshapeError(
                    f"{self.source}: {key} lists unknown model id '{name}'"
                    f"{suggest(name, known)}; the registry {self.config['registry']} has: "
                    f"{', '.join(known)}"
                )
        selected: dict[str, list[str]] = {}
        for name in wanted:
            variants = list(self.registry[name]["variants"])
            if name in per_model:
                self._check_variants(per_model[name], variants, f"variants.{name}")
                variants = [v for v in per_model[name] if v in variants]
            elif isinstance(chosen, list):
                variants = [v for v in chosen if v in variants]
            if variants:
                selected[name] = variants
        if isinstance(chosen, list):
            everywhere = sorted({v for e in self.registry.values() for v in e["variants"]})
            self._check_variants(chosen, everywhere, "variants")
        if not selected:
            raise BrainshapeError(f"{self.source}: the models/variants selection is empty")
        return selected

    def _check_variants(self, names: Sequence[str], known: Sequence[str], key: str) -> None:
        for v in names:
            if v not in known:
                where = "no registry entry has" if key == "variants" else "the entry lacks"
                raise BrainshapeError(
                    f"{self.source}: {key} lists '{v}', which {where}{suggest(v, list(known))}"
                )

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

    def needs_atlas(self, ds: str) -> bool:
        """Whether some run is an image whose voxels an atlas must sort into ROIs (response
        matrices come with their own label tables, or none)."""
        return bool((self.runs(ds)["format"] != "hdf5").any())

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

    def runs(self, ds: str, *, excluded: bool = False) -> pd.DataFrame:
        """The dataset's runs sheet (:mod:`brainshape.sheet`): one row per subject, story and
        run, paths as written (relative to ``bids_root`` unless absolute).

        Read from ``datasets.<ds>.runs``, or derived from ``subjects`` and ``stories`` for a
        regular BIDS + fMRIPrep dataset (every subject heard every story). With a sheet, the
        config's ``subjects`` and ``stories``, when given, select among its rows. Rows marked
        ``exclude`` are left out unless ``excluded``.
        """
        if ds not in self._runs:
            table = self._read_runs(ds)
            self._runs[ds] = (table, table[~table["exclude"]].reset_index(drop=True))
        return self._runs[ds][0 if excluded else 1]

    def _read_runs(self, ds: str) -> pd.DataFrame:
        d = self.dataset(ds)
        responses.check_tr(d["tr"], f"{self.source}: datasets.{ds}")
        if d.get("runs") is None:
            paths = lambda sub, story: self._fmriprep_paths(ds, sub, story)  # noqa: E731
            return sheet.derive_sheet(d, paths, self.runs_schema)
        table = sheet.read_sheet(d["runs"], self.runs_schema)
        for key in ("subjects", "stories"):
            if d.get(key):
                column = key[:-1] if key == "subjects" else "story"
                unknown = sorted(set(map(str, d[key])) - set(table[column]))
                if unknown:
                    raise BrainshapeError(
                        f"{self.source}: datasets.{ds}.{key} lists {', '.join(unknown)}, which "
                        f"the runs sheet {d['runs']} does not have; fix the list or the sheet"
                    )
                table = table[table[column].isin(list(map(str, d[key])))]
        if not (~table["exclude"]).any():
            raise BrainshapeError(
                f"{self.source}: datasets.{ds}: every row of the runs sheet {d['runs']} is "
                "excluded or deselected; nothing to run"
            )
        return table.reset_index(drop=True)

    def _fmriprep_paths(self, ds: str, sub: str, story: str) -> fmri.RunPaths:
        # As written in the config (relative to bids_root unless absolute), like a sheet's.
        d = self.dataset(ds)
        return fmri.bids_paths(d["fmriprep_dir"], sub, story, d["space"])

    def subjects(self, ds: str) -> list[str]:
        """Subjects with at least one run, in the order of the sheet."""
        return list(dict.fromkeys(self.runs(ds)["subject"]))

    def stories(self, ds: str) -> list[str]:
        """Every story some subject heard, in the order of the sheet."""
        return list(dict.fromkeys(self.runs(ds)["story"]))

    def subject_stories(self, ds: str, sub: str) -> list[str]:
        """The stories subject ``sub`` heard, in the order of the sheet."""
        return list(self._stories_by_subject(ds).get(sub, []))

    def _stories_by_subject(self, ds: str) -> dict[str, list[str]]:
        # Asked once per job while Snakemake plans (thousands of times): one pass, kept.
        key = ("stories_by_subject", ds)
        if key not in self._memo:
            runs = self.runs(ds)
            heard: dict[str, dict[str, None]] = {}
            for sub, story in zip(runs["subject"], runs["story"], strict=True):
                heard.setdefault(sub, {})[story] = None
            self._memo[key] = {sub: list(stories) for sub, stories in heard.items()}
        return self._memo[key]

    def subject_runs(self, ds: str, sub: str) -> pd.DataFrame:
        """The rows of subject ``sub``, with paths resolved against the dataset root."""
        runs = self.runs(ds)
        rows = runs[runs["subject"] == sub].reset_index(drop=True)
        for column in sheet.PATH_COLUMNS:
            rows[column] = [
                None if v is None else str(self.under_root(ds, v)) for v in rows[column]
            ]
        return rows

    def sheet_rows(self, ds: str) -> list[dict]:
        """Every row of the runs sheet, excluded ones included, as plain dicts with paths
        resolved against the dataset root (the quality control lists them all)."""
        rows = self.runs(ds, excluded=True).to_dict("records")
        for row in rows:
            for key, value in row.items():
                if key in sheet.PATH_COLUMNS and value is not None:
                    row[key] = str(self.under_root(ds, value))
                elif hasattr(value, "item"):
                    row[key] = value.item()  # numpy scalars: not YAML/JSON-friendly params
        return rows

    def grid_file(self, ds: str, sub: str) -> Path | None:
        """The image whose grid the ``i, j, k`` of subject ``sub``'s targets index: the mask of
        its first run, else that run's image (the reference the fMRI stage assigns targets on);
        None where its responses are matrices (no grid)."""
        key = ("grid_files", ds)
        if key not in self._memo:  # asked by every maps job while Snakemake plans
            first = self.runs(ds).drop_duplicates("subject")
            self._memo[key] = {
                r.subject: None if r.format == "hdf5" else self.under_root(ds, r.mask or r.response)
                for r in first.itertuples()
            }
        return self._memo[key][sub]

    def space(self, ds: str) -> str | None:
        """The template space of the dataset's images: ``space`` of a dataset without a runs
        sheet, else the ``space-`` entity of its first subject's grid image (None if none)."""
        if self.dataset(ds).get("runs") is None:
            return self.dataset(ds)["space"]
        grid = self.grid_file(ds, self.subjects(ds)[0])
        found = re.search(r"_space-([A-Za-z0-9]+)", grid.name) if grid is not None else None
        return found.group(1) if found else None

    def word_sources(self, ds: str) -> dict[str, dict[str, str]]:
        """Per story, its word-timing file (resolved), format and tier, and its transcript
        (resolved) where ``words.transcript`` names one."""
        runs = self.runs(ds).drop_duplicates("story")
        transcript = self.dataset(ds)["words"].get("transcript")
        sources = {}
        for r in runs.itertuples():
            source = {"path": str(self.under_root(ds, r.words)), "format": r.words_format}
            source["tier"] = r.tier
            if transcript:
                source["transcript"] = str(self.under_root(ds, transcript.format(story=r.story)))
            sources[r.story] = source
        return sources

    def word_file(self, ds: str, story: str) -> Path:
        return Path(self.word_sources(ds)[story]["path"])

    def word_inputs(self, ds: str, story: str) -> list[Path]:
        """The files the words of ``story`` are read from: its word timings and transcript."""
        source = self.word_sources(ds)[story]
        return [Path(source[k]) for k in ("path", "transcript") if k in source]

    def run_paths(self, ds: str, sub: str, story: str) -> fmri.RunPaths:
        """The files of one subject's first run of one story (response, mask, confounds)."""
        rows = self.subject_runs(ds, sub)
        row = rows[rows["story"] == story].iloc[0]
        return fmri.RunPaths(
            bold=Path(row.response),
            mask=Path(row["mask"]) if row["mask"] else None,
            confounds=Path(row.confounds) if row.confounds else None,
            sub=sub,
            story=story,
        )

    def input_files(self, ds: str, sub: str | None = None) -> list[Path]:
        """Every file the runs of ``sub`` (or of every subject) read: responses, masks,
        confounds, label tables."""
        runs = self.runs(ds) if sub is None else self.runs(ds).query("subject == @sub")
        files = []
        for column in ("response", "mask", "confounds", "labels"):
            files += [self.under_root(ds, v) for v in runs[column] if v is not None]
        return list(dict.fromkeys(files))

    # --- encode jobs ---------------------------------------------------------------------------

    def subject_groups(self, ds: str) -> dict[str, list[str]]:
        """Subjects of ``ds`` in encode jobs (names g1, g2, ...).

        Subjects who heard the same stories share one design decomposition (their targets are
        stacked), so subjects are grouped by their set of stories, each set cut into groups of
        at most ``encoding.group_size``; the job count stays at models x variants x groups.
        """
        key = ("subject_groups", ds)
        if key not in self._memo:
            self._memo[key] = self._subject_groups(ds)
        return {group: list(subs) for group, subs in self._memo[key].items()}

    def _subject_groups(self, ds: str, stories=None, size: int | None = None) -> dict:
        """Subjects grouped by the stories they heard (of ``stories`` only, where given;
        subjects who heard none of them are left out), in groups of at most ``size``
        (default ``encoding.group_size``)."""
        size = size or self.config["encoding"]["group_size"]
        by_stories: dict[tuple[str, ...], list[str]] = {}
        for sub in self.subjects(ds):
            heard = set(self.subject_stories(ds, sub))
            key = tuple(sorted(heard if stories is None else heard & set(stories)))
            if key:
                by_stories.setdefault(key, []).append(sub)
        chunks = [
            subs[i : i + size] for subs in by_stories.values() for i in range(0, len(subs), size)
        ]
        return {f"g{i + 1}": chunk for i, chunk in enumerate(chunks)}

    def crossfit_groups(self, ds: str, half: str) -> dict[str, list[str]]:
        """Subjects of the encode jobs of one cross-fitting half (names g1, g2, ...), grouped by
        the stories of the half they heard. With voxel targets a half's job fits a sample of
        ``regressions.crossfit_voxels`` of each ROI's voxels, so its groups are that many times
        larger (``encoding.group_size / crossfit_voxels`` subjects): as many targets per job as
        an encode job, and one design decomposition for all of them."""
        from brainshape import crossfit

        key = ("crossfit_groups", ds, half)
        if key not in self._memo:
            size = self.config["encoding"]["group_size"]
            if self.config["fmri"]["targets"] == "voxels":
                size = math.ceil(size / float(self.config["regressions"]["crossfit_voxels"]))
            stories = crossfit.half_stories(self.stories(ds), half)
            self._memo[key] = self._subject_groups(ds, stories, size)
        return {group: list(subs) for group, subs in self._memo[key].items()}

    def crossfit_group_subjects(self, ds: str, half: str, group: str) -> list[str]:
        groups = self.crossfit_groups(ds, half)
        if group not in groups:
            raise BrainshapeError(
                f"datasets.{ds} has cross-fitting groups {', '.join(groups)} in half {half}, "
                f"not '{group}' (encoding.group_size and regressions.crossfit_voxels set them)"
            )
        return groups[group]

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
