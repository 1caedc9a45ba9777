"""The study as the workflow sees it: datasets, paths, per-job parameters and resources.

Snakemake's rule files call into one :class:`Study` built from the validated config and
registry, so that every path convention and every parameter set lives here, in plain Python that
tests can import without Snakemake.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brainshape.errors import BrainshapeError
from brainshape.fmri import BOLD, CONFOUNDS, MASK

#: Where the demo generator writes its atlas, relative to the dataset root.
DEMO_ATLAS = {
    "image": "derivatives/atlas/atlas-demo_space-MNI152NLin2009cAsym_dseg.nii.gz",
    "labels": "derivatives/atlas/atlas-demo_dseg.tsv",
}

#: Model sources that the workflow materialises itself (rule prepare_model).
PREPARED_SOURCES = ("tiny", "gguf_package")

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}

_log = logging.getLogger("brainshape")


def _bold_volumes(path: Path, tr: float) -> tuple[int, float]:
    """(volumes, TR in s) from a BOLD NIfTI header, without reading the data."""
    import nibabel as nib

    header = nib.load(path).header
    shape = header.get_data_shape()
    zooms = header.get_zooms()
    n = int(shape[3]) if len(shape) > 3 else 1
    return n, float(zooms[3]) if len(zooms) > 3 and zooms[3] > 0 else tr


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Study:
    """Datasets, models and stage parameters of one validated configuration."""

    def __init__(self, config: Mapping[str, Any], registry: Mapping[str, Any], source: str):
        self.config = config
        self.registry = registry["models"]
        self.source = source
        self.model_root = Path(config["model_root"])
        self._models = self._select_models()

    # --- selection ---------------------------------------------------------------------------

    def _select_models(self) -> dict[str, list[str]]:
        known = list(self.registry)
        wanted = known if self.config["models"] == "all" else list(self.config["models"])
        selected: dict[str, list[str]] = {}
        for name in wanted:
            if name not in self.registry:
                raise BrainshapeError(
                    f"{self.source}: models lists unknown model id '{name}'"
                    f"{_suggest(name, known)}; the registry {self.config['registry']} has: "
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
                        f"{_suggest(v, sorted(everywhere))}"
                    )
        if not selected:
            raise BrainshapeError(f"{self.source}: the models/variants selection is empty")
        return selected

    @property
    def datasets(self) -> dict[str, dict]:
        return self.config["datasets"]

    def dataset(self, name: str) -> dict:
        return self.datasets[name]

    def models(self) -> list[str]:
        return list(self._models)

    def variants(self, model: str) -> list[str]:
        return self._models[model]

    def model_variants(self) -> list[tuple[str, str]]:
        return [(m, v) for m, vs in self._models.items() for v in vs]

    # --- paths -------------------------------------------------------------------------------

    def root(self, ds: str) -> Path:
        return Path(self.dataset(ds)["bids_root"])

    def _under_root(self, ds: str, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root(ds) / p

    def fmriprep_dir(self, ds: str) -> Path:
        return self._under_root(ds, self.dataset(ds)["fmriprep_dir"])

    def atlas(self, ds: str) -> dict[str, Path]:
        spec = self.dataset(ds).get("atlas") or (DEMO_ATLAS if self.is_demo(ds) else None)
        if spec is None:
            raise BrainshapeError(
                f"{self.source}: datasets.{ds}.atlas is missing; give the atlas "
                "label image and its labels TSV (columns index, name)"
            )
        return {k: self._under_root(ds, spec[k]) for k in ("image", "labels")}

    def is_demo(self, ds: str) -> bool:
        return bool(self.dataset(ds)["demo"])

    def word_file(self, ds: str, story: str) -> Path:
        return self._under_root(ds, self.dataset(ds)["words"]["path"].format(story=story))

    def run_files(self, ds: str, sub: str, story: str) -> dict[str, Path]:
        base = self.fmriprep_dir(ds)
        space = self.dataset(ds)["space"]
        fmt = {"sub": sub, "story": story, "space": space}
        return {
            "bold": base / BOLD.format(**fmt),
            "mask": base / MASK.format(**fmt),
            "confounds": base / CONFOUNDS.format(**fmt),
        }

    def model_dir(self, model: str) -> Path | None:
        """Local directory of a model the workflow prepares; None for hub models."""
        if self.registry[model]["source"]["kind"] in PREPARED_SOURCES:
            return self.model_root / model
        return None

    # --- targets and inputs ------------------------------------------------------------------

    def all_targets(self) -> list[str]:
        targets = []
        for ds in self.datasets:
            targets.append(f"results/{ds}/brainscores.parquet")
            targets += [f"results/{ds}/plots/brainscores_{m}.png" for m in self.models()]
            targets += self.shape_targets(ds)
        return targets

    def demo_dir(self, ds: str) -> str:
        return f"resources/demo/{ds}"

    def demo_model_dirs(self, ds: str) -> list[str]:
        planted = {p["model"] for p in self.config["demo"]["planted"]}
        return [str(self.model_dir(m)) for m in sorted(planted) if self.model_dir(m) is not None]

    def _demo_or(self, ds: str, files: list[Path]) -> list[str]:
        # A demo dataset is one directory output of rule demo_data: depend on it, not its files.
        return [self.demo_dir(ds)] if self.is_demo(ds) else [str(f) for f in files]

    def word_files(self, ds: str) -> list[str]:
        return self._demo_or(ds, [self.word_file(ds, s) for s in self.dataset(ds)["stories"]])

    def fmri_files(self, ds: str, sub: str) -> list[str]:
        files = [
            f for s in self.dataset(ds)["stories"] for f in self.run_files(ds, sub, s).values()
        ]
        return self._demo_or(ds, files + list(self.atlas(ds).values()))

    def fmri_dirs(self, ds: str) -> list[str]:
        return [f"results/{ds}/fmri/sub-{s}" for s in self.dataset(ds)["subjects"]]

    def encoding_tables(self, ds: str) -> list[str]:
        return [
            f"results/{ds}/encoding/{m}/{v}/{g}.parquet"
            for m, v in self.model_variants()
            for g in self.subject_groups(ds)
        ]

    def subject_groups(self, ds: str) -> dict[str, list[str]]:
        """Subjects of ``ds`` in groups of ``encoding.group_size`` (names g1, g2, ...).

        Every subject of a dataset heard its stories, so any group shares one design; one encode
        job per group keeps the study's job count at models x variants x groups.
        """
        subs = list(self.dataset(ds)["subjects"])
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

    def group_fmri_dirs(self, ds: str, group: str) -> list[str]:
        return [f"results/{ds}/fmri/sub-{s}" for s in self.group_subjects(ds, group)]

    def baseline_tables(self, ds: str) -> list[str]:
        return [f"results/{ds}/baselines/{b}.parquet" for b in self.config["encoding"]["baselines"]]

    def ceiling_tables(self, ds: str) -> list[str]:
        return [f"results/{ds}/ceiling.parquet"] if self.config["encoding"]["ceiling"] else []

    def model_dir_input(self, model: str) -> list[str]:
        d = self.model_dir(model)
        return [str(d)] if d is not None else []

    def local_hub_dir(self, model: str) -> Path | None:
        """A downloaded copy of a hub model under ``model_root/<model>``, if there is one.

        Such a folder (``hf download <hf_id> --local-dir ...``) is used instead of the Hugging
        Face cache.
        """
        path = self.model_root / model
        if self.registry[model]["source"]["kind"] == "hub" and (path / "config.json").is_file():
            return path
        return None

    def quantized_dir(self, model: str, variant: str) -> Path | None:
        """Folder of a ``gptq`` variant quantised here (rule quantize_model); else None."""
        settings = self.registry[model]["variants"][variant]
        if settings["kind"] == "gptq" and not settings.get("checkpoint"):
            return self.model_root / "gptq" / model / variant
        return None

    def quantized_dir_input(self, model: str, variant: str) -> list[str]:
        d = self.quantized_dir(model, variant)
        return [str(d)] if d is not None else []

    def features_env(self, model: str, variant: str) -> str:
        """Conda environment file (in workflow/envs) of an extraction job."""
        kind = self.registry[model]["variants"][variant]["kind"]
        return "gptq.yaml" if kind == "gptq" else "brainshape.yaml"

    # --- parameters (what a job computes with; a change reruns that job) -----------------------

    def demo_params(self, ds: str) -> dict:
        d = self.dataset(ds)
        if d["bids_root"].rstrip("/") != self.demo_dir(ds):
            raise BrainshapeError(
                f"{self.source}: datasets.{ds} is a demo dataset, so its "
                f"bids_root must be '{self.demo_dir(ds)}' (got '{d['bids_root']}')"
            )
        demo = dict(self.config["demo"])
        return {
            "subjects": list(d["subjects"]),
            "stories": list(d["stories"]),
            "tr": d["tr"] if d["tr"] is not None else 2.0,
            "seed": demo["seed"],
            "snr": demo["snr"],
            "ar1": demo["ar1"],
            "planted": [dict(p) for p in demo["planted"]],
            "registry": self.config["registry"],
            "model_root": str(self.model_root),
            "context_tokens": self.config["features"]["context_tokens"],
            "stride": self.config["features"]["stride"],
            "batch_size": self.config["features"]["batch_size"],
        }

    def words_params(self, ds: str) -> dict:
        d = self.dataset(ds)
        return {
            "format": d["words"]["format"],
            "tier": d["words"]["tier"],
            "sources": {s: str(self.word_file(ds, s)) for s in d["stories"]},
        }

    def features_params(self, ds: str, model: str, variant: str) -> dict:
        f = self.config["features"]
        return {
            "model": model,
            "variant": variant,
            # Only this variant of the entry: editing a sibling variant leaves this job alone.
            "entry": {
                **self.registry[model],
                "variants": {variant: self.registry[model]["variants"][variant]},
            },
            "model_dir": str(
                self.quantized_dir(model, variant)
                or self.model_dir(model)
                or self.local_hub_dir(model)
                or ""
            ),
            "stories": list(self.dataset(ds)["stories"]),
            "context_tokens": f["context_tokens"],
            "stride": f["stride"],
            "batch_size": f["batch_size"],
            "word_token": f["word_token"],
        }

    def fmri_params(self, ds: str, sub: str) -> dict:
        d, f = self.dataset(ds), self.config["fmri"]
        atlas = self.atlas(ds)
        return {
            "subject": sub,
            "stories": list(d["stories"]),
            "fmriprep_dir": str(self.fmriprep_dir(ds)),
            "space": d["space"],
            "tr": d["tr"],
            "atlas": str(atlas["image"]),
            "labels": str(atlas["labels"]),
            "targets": f["targets"],
            "rois": f["rois"],
            "confounds": list(f["confounds"]),
            "detrend": f["detrend"],
            "standardize": f["standardize"],
            "high_pass": f["high_pass"],
            "trim_start": f["trim_start"],
            "trim_end": f["trim_end"],
        }

    def quantize_params(self, model: str, variant: str) -> dict:
        entry = self.registry[model]
        settings = entry["variants"][variant]
        local = self.model_dir(model)
        return {
            "source": str(local) if local is not None else entry["hf_id"],
            "revision": None if local is not None else entry.get("revision"),
            "bits": int(settings.get("bits", 4)),
            "group_size": int(settings.get("group_size", 128)),
        }

    def encode_params(self, ds: str) -> dict:
        e = self.config["encoding"]
        return {
            "stories": list(self.dataset(ds)["stories"]),
            "subjects": list(self.dataset(ds)["subjects"]),
            "delays": list(e["delays"]),
            "alphas": [float(a) for a in e["alphas"]],
            "lanczos_window": e["lanczos_window"],
            "target_chunk": e["target_chunk"],
            **self.ridge_params(),
        }

    def ridge_params(self) -> dict:
        """Solver options shared by model and baseline encoding jobs."""
        e = self.config["encoding"]
        if e["folds"] == "blocks" and e["n_blocks"] is None:
            raise BrainshapeError(
                f"{self.source}: encoding.folds is 'blocks' but encoding.n_blocks is not set; "
                "give the number of contiguous blocks (at least 3)"
            )
        keys = ("folds", "n_blocks", "gap", "backend", "dtype", "n_permutations")
        return {k: e[k] for k in (*keys, "permutation_block", "seed", "metrics", "segment_trs")}

    def encode_group_params(self, ds: str, group: str) -> dict:
        return {**self.encode_params(ds), "subjects": self.group_subjects(ds, group)}

    # --- topology and regressions -------------------------------------------------------------

    #: Report plots of the aggregate analyses, one per dataset each.
    SHAPE_PLOTS = ("regressions", "scaling", "contrasts")

    def shape_targets(self, ds: str) -> list[str]:
        plots = [f"results/{ds}/plots/shape_{m}.png" for m in self.models()]
        families = {self.registry[m]["family"] for m in self.models()}
        if len(families) < 2:
            # Family-grouped cross-validation needs two families (published scores too are
            # matched to the selected models): with one, the shape table is still made, the
            # regressions are not planned.
            return [f"results/{ds}/topology.parquet", *plots]
        return [
            f"results/{ds}/topology.parquet",
            *plots,
            f"results/{ds}/regressions.parquet",
            *(f"results/{ds}/plots/{name}.png" for name in self.SHAPE_PLOTS),
        ]

    def topology_pairs(self, ds: str) -> list[str]:
        return [f"results/{ds}/topology/pairs/{m}/{v}.parquet" for m, v in self.model_variants()]

    def _cloud_settings(self) -> dict:
        """Settings every cloud, brain or layer, is prepared with."""
        t = self.config["topology"]
        return {"metric": t["metric"], "components": t["components"]}

    def topology_timebase_params(self, ds: str) -> dict:
        t = self.config["topology"]
        emb = t["embedding"]
        # ROI-mean clouds are delay-embedded: the time base starts where the embedding reaches.
        roi_mean = self.config["fmri"]["targets"] == "roi_mean"
        return {
            "stories": list(self.dataset(ds)["stories"]),
            "delay_s": float(t["delay_s"]),
            "history_s": (int(emb["dimension"]) - 1) * float(emb["lag_s"]) if roi_mean else 0.0,
            **{k: t[k] for k in ("max_points", "seed", "null_shifts")},
        }

    def topology_brain_params(self, ds: str) -> dict:
        t = self.config["topology"]
        return {
            **self._cloud_settings(),
            "embedding": dict(t["embedding"]),
            **{k: t[k] for k in ("maxdim", "backend", "per_subject")},
        }

    def layer_diagrams_params(self, ds: str) -> dict:
        t = self.config["topology"]
        return {
            "stories": list(self.dataset(ds)["stories"]),
            "window": self.config["encoding"]["lanczos_window"],
            **self._cloud_settings(),
            **{k: t[k] for k in ("maxdim", "backend")},
        }

    def topology_pairs_params(self, ds: str) -> dict:
        t = self.config["topology"]
        return {
            "stories": list(self.dataset(ds)["stories"]),
            "window": self.config["encoding"]["lanczos_window"],
            **self._cloud_settings(),
            "orders": [dict(o) for o in t["wasserstein"]],
            "measures": list(t["measures"]),
            "summaries": list(t["summaries"]),
        }

    def published_scores(self) -> Path | None:
        path = self.config["regressions"]["published_scores"]
        return Path(path) if path else None

    def regression_scores(self, ds: str) -> str:
        """The scores to explain: a published CSV, or the pipeline's brainscores."""
        published = self.published_scores()
        return str(published) if published else f"results/{ds}/brainscores.parquet"

    def regressions_params(self, ds: str) -> dict:
        r = dict(self.config["regressions"])
        r["feature_sets"] = {k: list(v) for k, v in r["feature_sets"].items()}
        r["published"] = self.published_scores() is not None
        r["families"] = {m: self.registry[m]["family"] for m in self.models()}
        r["kinds"] = [
            [m, v, self.registry[m]["variants"][v]["kind"]] for m, v in self.model_variants()
        ]
        # Published scores without a variant column are matched to each model's first full
        # (trained, unquantized) variant.
        r["default_variants"] = {
            m: next(
                (v for v in self.variants(m) if self.registry[m]["variants"][v]["kind"] == "full"),
                self.variants(m)[0],
            )
            for m in self.models()
        }
        # Parameter counts for the nuisance model and the scaling plot: the registry's, else the
        # count the prepared model recorded.
        r["registry"] = {m: dict(self.registry[m]) for m in self.models()}
        r["model_dirs"] = {m: str(self.model_dir(m) or "") for m in self.models()}
        return r

    def plot_regressions_params(self, ds: str) -> dict:
        return self.regressions_params(ds)

    def plot_topology_params(self, ds: str) -> dict:
        return {"measures": list(self.config["topology"]["measures"])}

    # --- resources ---------------------------------------------------------------------------

    def _params_count(self, model: str) -> int:
        return int(self.registry[model]["params"] or 10_000_000)

    def features_mem_mb(self, model: str, variant: str) -> int:
        """Host memory for an extraction job: the checkpoint as read, plus headroom."""
        from brainshape import resources

        entry = self.registry[model]
        settings = dict(entry["variants"][variant])
        # Quantising kinds read the full-width checkpoint first; others read what they keep.
        if settings["kind"] in ("bnb8", "bnb4"):
            settings = {"kind": "full", "dtype": "bfloat16"}
        return resources.host_mem_mb(resources.weight_bytes(self._params_count(model), settings))

    def _gpu(self):
        from brainshape import resources

        g = self.config.get("gpu") or {}
        return resources.gpu_type(g.get("type", "H100-80GB"), g.get("memory_gib"), g.get("tflops"))

    def _window(self, model: str) -> tuple[int, int]:
        f = self.config["features"]
        window = min(int(f["context_tokens"]), int(self.registry[model]["context"]))
        stride = f.get("stride") or max(1, window // 2)
        return window, min(int(stride), window)

    def features_gpus(self, model: str, variant: str) -> int:
        """GPUs of one extraction job: weights plus activation headroom, sharded by layer."""
        from brainshape import resources

        entry = self.registry[model]
        settings = entry["variants"][variant]
        g = self.config.get("gpu") or {}
        window, _ = self._window(model)
        return resources.gpus_needed(
            resources.weight_bytes(self._params_count(model), settings),
            resources.activation_bytes(
                entry,
                settings,
                batch_size=int(self.config["features"]["batch_size"]),
                window=window,
            ),
            self._gpu(),
            usable=float(g.get("usable", 0.9)),
            max_gpus=int(g.get("max_gpus", 8)),
            what=f"model '{model}' variant '{variant}'",
        )

    def features_tokens(self, ds: str, model: str) -> int:
        """Tokens an extraction job forwards over the dataset's stories (window overlap in)."""
        from brainshape import resources

        window, stride = self._window(model)
        per_story = int(self.config["features"].get("tokens_per_story", 3000))
        arch = self.registry[model]["arch"]
        n = resources.tokens_processed(per_story, window=window, stride=stride, arch=arch)
        return n * len(self.dataset(ds)["stories"])

    def features_runtime_min(self, ds: str, model: str, variant: str | None = None) -> int:
        """Wall-clock minutes: forward FLOPs over the GPU's sustained rate, plus loading."""
        from brainshape import resources

        params = self._params_count(model)
        settings = self.registry[model]["variants"][variant] if variant else {"kind": "full"}
        return resources.runtime_minutes(
            params,
            self.features_tokens(ds, model),
            self._gpu(),
            weights=resources.weight_bytes(params, settings),
            slowdown=resources.KIND_SLOWDOWN.get(settings["kind"], 1.0),
            safety=float((self.config.get("gpu") or {}).get("safety", 2.0)),
        )

    def quantize_gpus(self, model: str) -> int:
        """GPT-QModel keeps the model in host memory and quantises one layer at a time on a GPU."""
        return 1

    def quantize_mem_mb(self, model: str) -> int:
        from brainshape import resources

        weights = resources.weight_bytes(
            self._params_count(model), {"kind": "full", "dtype": "bfloat16"}
        )
        return resources.host_mem_mb(2 * weights)

    def quantize_runtime_min(self, model: str) -> int:
        """A rough bound: GPTQ takes some minutes per billion parameters on a data-centre GPU."""
        return max(30, int(math.ceil(10 * self._params_count(model) / 1e9)))

    # --- encode, baseline and layer_diagrams resources, from the study's shape -----------------

    #: Kept-TR count assumed for a story whose BOLD run cannot be read at planning time (a
    #: 20-minute story at a TR of 2 s), and speech rate (words per second) for word counts.
    DEFAULT_STORY_TRS = 600
    WORDS_PER_SECOND = 3.0
    #: ROIs (per hemisphere) and voxels per subject assumed when the atlas is not readable.
    DEFAULT_ROIS = 100
    DEFAULT_VOXELS = 20000

    def story_shapes(self, ds: str) -> dict[str, tuple[int, int]]:
        """Per story, (volumes of its BOLD run, words) as planning sees them.

        Demo datasets: exactly what the demo generator will make (the packaged stories, timed
        with the demo seed). Real datasets: the volume count from the header of the first
        subject's BOLD run of the story (nibabel reads the header only) and words from the
        run's length at :attr:`WORDS_PER_SECOND`; a story without a readable run counts
        :attr:`DEFAULT_STORY_TRS` volumes, said once in the log.
        """
        cache = self.__dict__.setdefault("_story_shapes", {})
        if ds in cache:
            return cache[ds]
        d = self.dataset(ds)
        tr = float(d["tr"]) if d.get("tr") is not None else 2.0
        shapes: dict[str, tuple[int, int]] = {}
        if self.is_demo(ds):
            from brainshape import demo, stimuli

            seed = self.config["demo"]["seed"]
            for story in d["stories"]:
                words = stimuli.story_words(demo._story_file(story))
                _, duration = demo.word_timings(words, demo._rng(seed, 1, story))
                shapes[story] = (demo.n_volumes(duration, tr), len(words))
            cache[ds] = shapes
            return shapes
        missing = []
        for story in d["stories"]:
            n_trs = None
            for sub in d["subjects"]:
                path = self.run_files(ds, sub, story)["bold"]
                if path.is_file():
                    try:
                        n_trs, tr_run = _bold_volumes(path, tr)
                    except Exception:  # noqa: BLE001 - any unreadable header: plan with defaults
                        continue
                    break
            if n_trs is None:
                missing.append(story)
                n_trs, tr_run = self.DEFAULT_STORY_TRS, tr
            shapes[story] = (n_trs, int(math.ceil(n_trs * tr_run * self.WORDS_PER_SECOND)))
        if missing:
            _log.warning(
                "datasets.%s: no BOLD run to read for %d stor%s (%s); encode resources are "
                "planned with %d volumes each",
                ds,
                len(missing),
                "y" if len(missing) == 1 else "ies",
                ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else ""),
                self.DEFAULT_STORY_TRS,
            )
        cache[ds] = shapes
        return shapes

    def targets_per_subject(self, ds: str, mode: str | None = None) -> int:
        """fMRI targets of one subject: ROIs x 2 hemispheres, or the voxels of those ROIs.

        ROIs are ``fmri.rois``, else every label of the atlas (the labels TSV); voxels are
        counted in the atlas image. Where the atlas cannot be read: :attr:`DEFAULT_ROIS` ROIs,
        :attr:`DEFAULT_VOXELS` voxels. ``mode`` overrides ``fmri.targets``.
        """
        f = self.config["fmri"]
        mode = mode or f["targets"]
        # Asked for every encode job of the DAG: count once per dataset and mode.
        cache = self.__dict__.setdefault("_targets_per_subject", {})
        if (ds, mode) not in cache:
            cache[(ds, mode)] = self._count_targets(ds, mode)
        return cache[(ds, mode)]

    def _count_targets(self, ds: str, mode: str) -> int:
        f = self.config["fmri"]
        wanted = list(f["rois"]) if f["rois"] else None
        if self.is_demo(ds):
            from brainshape import demo

            rois = [r for r in demo.ROIS if wanted is None or r in wanted]
            if mode == "roi_mean":
                return 2 * len(rois)
            voxels = demo.demo_atlas().voxels
            return sum(len(v) for (roi, _), v in voxels.items() if roi in rois)
        try:
            atlas = self.atlas(ds)
        except BrainshapeError:
            atlas = None
        labels = None
        if atlas is not None and atlas["labels"].is_file():
            import pandas as pd

            try:
                table = pd.read_csv(atlas["labels"], sep="\t")
            except Exception:  # noqa: BLE001 - an unreadable TSV is planned with defaults
                table = pd.DataFrame()
            if {"index", "name"} <= set(table.columns):
                labels = {
                    str(n): int(i) for i, n in zip(table["index"], table["name"], strict=True) if i
                }
        if mode == "roi_mean":
            if wanted is not None:
                return 2 * len(wanted)
            return 2 * (len(labels) if labels else self.DEFAULT_ROIS)
        if atlas is None or labels is None or not atlas["image"].is_file():
            return self.DEFAULT_VOXELS
        import nibabel as nib
        import numpy as np

        keep = [labels[r] for r in (wanted or labels) if r in labels]
        try:
            data = np.asanyarray(nib.load(atlas["image"]).dataobj)
        except Exception:  # noqa: BLE001 - an unreadable image is planned with the default
            return self.DEFAULT_VOXELS
        return int(np.isin(data, keep).sum())

    def encode_dims(self, model: str | None) -> tuple[int, int]:
        """(feature layers including the embeddings, hidden units) of a model's features.

        From the registry's ``layers``/``hidden``, else the config of a model built from one,
        else a guess from ``params``. ``None`` is a baseline: one layer of at most 3 features.
        """
        from brainshape import resources

        if model is None:
            return 1, 3
        entry = self.registry[model]
        conf = (entry.get("source") or {}).get("config") or {}
        layers = entry.get("layers") or conf.get("n_layer") or conf.get("num_hidden_layers")
        hidden = (
            entry.get("hidden")
            or conf.get("n_embd")
            or conf.get("hidden_size")
            or conf.get("d_model")
        )
        layers = int(layers or resources._guess_layers(entry))
        hidden = int(hidden or resources._guess_hidden(entry))
        return layers + 1, hidden

    def _kept_story_shapes(self, ds: str) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """Per story its kept volumes (after ``fmri.trim_start``/``trim_end``) and words, and
        the volumes trimmed from each run (:meth:`story_shapes`)."""
        f = self.config["fmri"]
        trim = int(f["trim_start"]) + int(f["trim_end"])
        stories = self.story_shapes(ds).values()
        return tuple(max(1, n - trim) for n, _ in stories), tuple(w for _, w in stories), trim

    def encode_shape(self, ds: str, model: str | None, group: str | None = None):
        """The :class:`resources.EncodeShape` of an encode job (a baseline when ``model`` is
        None: every subject of the dataset; else the subjects of ``group``, the largest group
        when None)."""
        from brainshape import resources

        e = self.config["encoding"]
        kept, words, trim = self._kept_story_shapes(ds)
        if model is None:
            subjects = len(self.dataset(ds)["subjects"])
        elif group is None:
            subjects = max(len(s) for s in self.subject_groups(ds).values())
        else:
            subjects = len(self.group_subjects(ds, group))
        segments = None
        if e["folds"] == "blocks" and e["n_blocks"]:
            from brainshape import ridge

            segments = tuple(len(b) for b in ridge.contiguous_folds(kept, e["n_blocks"]))
        layers, hidden = self.encode_dims(model)
        return resources.EncodeShape(
            story_trs=kept,
            story_words=words,
            trimmed=trim,
            layers=layers,
            hidden=hidden,
            delays=len(e["delays"]),
            targets=self.targets_per_subject(ds) * subjects,
            n_alphas=len(set(e["alphas"])),
            target_chunk=int(e["target_chunk"]),
            n_permutations=int(e["n_permutations"]),
            predictions="segment_identification" in e["metrics"],
            segments=segments,
        )

    def encode_gpus(self, model: str | None = None) -> int:
        """GPUs of one encode job (``encoding.gpus``); baselines always run on CPU cores."""
        gpus = int(self.config["encoding"].get("gpus", 0))
        if model is None:
            return 0
        if gpus and self.config["encoding"]["backend"] == "numpy":
            raise BrainshapeError(
                f"{self.source}: encoding.gpus is {gpus} but encoding.backend is 'numpy', "
                "which never uses a GPU; set encoding.backend to auto or torch, or "
                "encoding.gpus to 0"
            )
        return gpus

    def check_encode_gpu(self, ds: str, model: str, group: str | None = None) -> None:
        """Refuse, at planning time, an encode job whose float32 arrays exceed one GPU."""
        from brainshape import resources

        if not self.encode_gpus(model):
            return
        gpu = self._gpu()
        usable = gpu.memory_gib * 2**30 * float((self.config.get("gpu") or {}).get("usable", 0.9))
        need = resources.encode_gpu_bytes(self.encode_shape(ds, model, group))
        if need + resources.GPU_OVERHEAD_BYTES > usable:
            raise BrainshapeError(
                f"{self.source}: an encode job of model '{model}' on datasets.{ds} needs about "
                f"{need / 2**30:.1f} GiB on its GPU, more than a {gpu.memory_gib:g} GiB "
                f"gpu.type holds; lower encoding.target_chunk or encoding.group_size, or set "
                "encoding.gpus to 0"
            )

    def encode_mem_mb(self, ds: str, model: str | None, group: str | None = None) -> int:
        """Host memory (MiB) of an encode job (``model`` None: a baseline job), from the shape
        of the study (:func:`resources.encode_memory`); with ``encoding.gpus`` the CUDA
        context's share is added (:data:`resources.ENCODE_GPU_HOST_MIB`)."""
        from brainshape import resources

        overhead = resources.ENCODE_OVERHEAD_MIB
        if self.encode_gpus(model):
            self.check_encode_gpu(ds, model, group)
            overhead += resources.ENCODE_GPU_HOST_MIB
        return resources.encode_mem_mb(self.encode_shape(ds, model, group), overhead)

    def encode_runtime_min(self, ds: str, model: str | None, group: str | None = None) -> int:
        """Wall minutes of an encode job: its FLOPs (:func:`resources.encode_flops`) at
        ``encoding.cpu_gflops`` x threads, or at the GPU's rate with ``encoding.gpus``."""
        from brainshape import resources

        e = self.config["encoding"]
        if self.encode_gpus(model):
            rate = resources.encode_gpu_gflops(self._gpu(), e.get("gpu_tflops"))
        else:
            rate = float(e.get("cpu_gflops", resources.CPU_GFLOPS_PER_THREAD)) * int(e["threads"])
        shape = self.encode_shape(ds, model, group)
        # Many variants and groups share a shape: count its FLOPs once (a loop over the folds).
        flops = self.__dict__.setdefault("_encode_flops", {})
        if shape not in flops:
            flops[shape] = resources.encode_flops(shape)
        return resources.encode_runtime_min(shape, gflops=rate, flops=flops[shape])

    def layer_diagrams_mem_mb(self, ds: str, model: str) -> int:
        """Host memory (MiB) of a layer_diagrams job (:func:`resources.layer_diagrams_memory`):
        every layer's diagram, no brain cloud."""
        from brainshape import resources

        return resources.layer_diagrams_mem_mb(**{**self._topology_shape(ds, model), "clouds": 0})

    def topology_pairs_mem_mb(self, ds: str, model: str) -> int:
        """Host memory (MiB) of a topology_pairs job: every layer's geometry against every
        brain cloud, no diagram computed."""
        from brainshape import resources

        return resources.layer_diagrams_mem_mb(**self._topology_shape(ds, model), persistence=False)

    def _topology_shape(self, ds: str, model: str) -> dict:
        """Keyword arguments of :func:`resources.layer_diagrams_memory` for one variant.

        ``clouds`` and ``cloud_columns`` describe what a topology_pairs job holds: every layer's
        prepared cloud (points, distances, ranks and Gram matrix: about two clouds of the
        formula's kind each) and the ``null_shifts + 1`` copies of one brain cloud at a time.
        """
        t = self.config["topology"]
        kept, words, trim = self._kept_story_shapes(ds)
        if self.config["fmri"]["targets"] == "roi_mean":
            columns = int(t["embedding"]["dimension"])
        else:
            # A voxel cloud: one ROI's voxels (twice the mean ROI size, for larger ROIs).
            per_subject = self.targets_per_subject(ds)
            n_rois = self.targets_per_subject(ds, "roi_mean")
            columns = min(per_subject, 2 * max(1, per_subject // max(1, n_rois)))
        layers, hidden = self.encode_dims(model)
        n_points = min(int(t["max_points"]), sum(kept))
        return {
            "n_points": n_points,
            "story_trs": kept,
            "story_words": words,
            "trimmed": trim,
            "hidden": hidden,
            "clouds": 2 * layers + int(t["null_shifts"]) + 1,
            "cloud_columns": max(hidden, columns, n_points),
        }

    # --- checks before anything runs ---------------------------------------------------------

    def check_inputs(self) -> None:
        """Fail at planning time, in one message, if a real dataset lacks input files, or if
        encode jobs ask for GPUs they cannot use (:meth:`check_encode_gpu`)."""
        self._check_inputs()
        from brainshape import topology

        topology.check_settings(self.config["topology"], self.config["fmri"]["targets"])
        if self.config["encoding"].get("gpus"):
            for ds in self.datasets:
                for model in self.models():
                    self.check_encode_gpu(ds, model)

    def _check_inputs(self) -> None:
        published = self.published_scores()
        if published is not None and not published.is_file():
            raise BrainshapeError(
                f"{self.source}: regressions.published_scores {published} does not exist; give "
                "a CSV with columns model, roi, hemisphere, score, or null for the pipeline's"
                " brainscores"
            )
        for ds, d in self.datasets.items():
            if self.is_demo(ds):
                self.demo_params(ds)
                continue
            root = self.root(ds)
            if not root.is_dir():
                raise BrainshapeError(
                    f"{self.source}: datasets.{ds}.bids_root {root} does not "
                    "exist; point it at the BIDS dataset"
                )
            missing = [self.word_file(ds, s) for s in d["stories"]]
            for sub in d["subjects"]:
                for story in d["stories"]:
                    missing += list(self.run_files(ds, sub, story).values())
            missing += list(self.atlas(ds).values())
            missing = [p for p in missing if not p.exists()]
            if missing:
                shown = ", ".join(str(p) for p in missing[:3])
                more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
                raise BrainshapeError(
                    f"datasets.{ds}: {len(missing)} input file(s) missing: {shown}{more}. Check "
                    f"bids_root, fmriprep_dir, space, subjects and stories in {self.source}"
                )
