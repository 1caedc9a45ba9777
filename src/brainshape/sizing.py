"""How large each job of a study is: GPUs, host memory and wall time, for the scheduler and the
planner.

:class:`JobSizing` reads the shape of the study (models from the registry, stories and their
lengths, subjects, targets) and hands it to the models in :mod:`brainshape.resources`, which
know nothing about configs. ``common.smk`` asks it for every job's ``gpu``, ``mem_mb`` and
``runtime``; ``brainshape plan`` reads them back from the DAG.
"""

from __future__ import annotations

import dataclasses
import logging
import math

from brainshape import features, resources, scoring
from brainshape.errors import BrainshapeError
from brainshape.study import Study

_log = logging.getLogger("brainshape")

#: Kept-TR count assumed for a story whose BOLD run cannot be read at planning time (a
#: 20-minute story at a TR of 2 s), and speech rate (words per second) for word counts.
DEFAULT_STORY_TRS = 600
WORDS_PER_SECOND = 3.0
#: ROIs (per hemisphere) and voxels per subject assumed when the atlas is not readable.
DEFAULT_ROIS = 100
DEFAULT_VOXELS = 20000
#: Parameters assumed for a registry entry that does not give ``params``.
DEFAULT_PARAMS = 10_000_000
#: Memory of a maps job: a base, and bytes per encoding-table row (layer x subject x target).
MAPS_BASE_MB = 1000
MAPS_BYTES_PER_ROW = 200


class JobSizing:
    """Resources of every job of ``study``; results that many jobs share are computed once."""

    def __init__(self, study: Study):
        self.study = study
        self.config = study.config
        self._story_shapes: dict[str, dict[str, tuple[int, int]]] = {}
        self._targets: dict[tuple[str, str], int] = {}
        self._values: dict[str, tuple[int, int]] = {}
        self._flops: dict[resources.EncodeShape, float] = {}

    # --- feature extraction and quantisation ----------------------------------------------------

    def params_count(self, model: str) -> int:
        return int(self.study.entry(model)["params"] or DEFAULT_PARAMS)

    def priority(self, model: str) -> float:
        """Snakemake's ``priority`` of a model's jobs (higher first among the jobs that are ready
        at the same time): log10 of its parameters. The larger models' chains (extraction,
        encoding, shape) are the longest; on few cores, a run that starts them first ends
        sooner."""
        return math.log10(max(self.params_count(model), 10))

    def gpu(self) -> resources.GpuType:
        g = self.config["gpu"]
        return resources.gpu_type(g["type"], g["memory_gib"], g["tflops"])

    def window(self, model: str) -> tuple[int, int]:
        """(tokens per window, stride) of the model's extraction windows (special tokens, which
        planning cannot know, aside): :func:`features.window_geometry`."""
        f, entry = self.config["features"], self.study.entry(model)
        return features.window_geometry(
            int(f["context_tokens"]),
            f["stride"],
            cap=int(entry["context"]),
            special=0,
            arch="decoder",
        )

    def features_mem_mb(self, model: str, variant: str) -> int:
        """Host memory for an extraction job: the checkpoint as read, plus headroom."""
        settings = dict(self.study.settings(model, variant))
        # Kinds that quantise while loading read the full-width checkpoint first.
        if self.study.kind(model, variant).reads_full_width:
            settings = {"kind": "full", "dtype": "bfloat16"}
        return resources.host_mem_mb(resources.weight_bytes(self.params_count(model), settings))

    def features_gpus(self, model: str, variant: str) -> int:
        """GPUs of one extraction job: weights plus activation headroom, sharded by layer."""
        entry, settings = self.study.entry(model), self.study.settings(model, variant)
        g = self.config["gpu"]
        window, _ = self.window(model)
        return resources.gpus_needed(
            resources.weight_bytes(self.params_count(model), settings),
            resources.activation_bytes(
                entry,
                settings,
                batch_size=int(self.config["features"]["batch_size"]),
                window=window,
            ),
            self.gpu(),
            usable=float(g["usable"]),
            max_gpus=int(g["max_gpus"]),
            what=f"model '{model}' variant '{variant}'",
        )

    def features_tokens(self, ds: str, model: str) -> int:
        """Tokens an extraction job forwards over the dataset's stories (window overlap in)."""
        window, stride = self.window(model)
        per_story = int(self.config["features"]["tokens_per_story"])
        arch = self.study.entry(model)["arch"]
        n = resources.tokens_processed(per_story, window=window, stride=stride, arch=arch)
        return n * len(self.study.stories(ds))

    def features_runtime_min(self, ds: str, model: str, variant: str | None = None) -> int:
        """Wall-clock minutes: forward FLOPs over the GPU's sustained rate, plus loading."""
        params = self.params_count(model)
        settings = self.study.settings(model, variant) if variant else {"kind": "full"}
        return resources.runtime_minutes(
            params,
            self.features_tokens(ds, model),
            self.gpu(),
            weights=resources.weight_bytes(params, settings),
            slowdown=resources.kind_slowdown(settings["kind"], self.config["gpu"]["slowdown"]),
            safety=float(self.config["gpu"]["safety"]),
        )

    def quantize_gpus(self, model: str) -> int:
        """GPT-QModel keeps the model in host memory and quantises one layer at a time on a GPU."""
        return 1

    def quantize_mem_mb(self, model: str) -> int:
        weights = resources.weight_bytes(
            self.params_count(model), {"kind": "full", "dtype": "bfloat16"}
        )
        return resources.host_mem_mb(2 * weights)

    def quantize_runtime_min(self, model: str) -> int:
        """A rough bound: GPTQ takes some minutes per billion parameters on a data-centre GPU."""
        return max(30, int(math.ceil(10 * self.params_count(model) / 1e9)))

    # --- the shape of the data ------------------------------------------------------------------

    def story_shapes(self, ds: str) -> dict[str, tuple[int, int]]:
        """Per story, (volumes of its BOLD run, words) as planning sees them.

        Demo datasets: exactly what the demo generator will make (the packaged stories, timed
        with the demo seed). Real datasets: the volume count from the header of the first
        subject's BOLD run of the story (nibabel reads the header only) and words from the
        run's length at :data:`WORDS_PER_SECOND`; a story without a readable run counts
        :data:`DEFAULT_STORY_TRS` volumes, said once in the log.
        """
        if ds not in self._story_shapes:
            self._story_shapes[ds] = self._read_story_shapes(ds)
        return self._story_shapes[ds]

    def _read_story_shapes(self, ds: str) -> dict[str, tuple[int, int]]:
        from brainshape import demo

        d = self.study.dataset(ds)
        tr = float(d["tr"]) if d.get("tr") is not None else 2.0
        if self.study.is_demo(ds):
            seed = self.config["demo"]["seed"]
            return {s: demo.story_shape(s, seed, tr) for s in self.study.stories(ds)}
        runs = self.study.runs(ds)
        shapes, missing = {}, []
        for story in self.study.stories(ds):
            n_trs, tr_run = self._story_rows(ds, runs[runs["story"] == story], tr)
            if n_trs is None:
                missing.append(story)
                n_trs, tr_run = DEFAULT_STORY_TRS, tr
            shapes[story] = (n_trs, int(math.ceil(n_trs * tr_run * WORDS_PER_SECOND)))
        if missing:
            _log.warning(
                "datasets.%s: no BOLD run to read for %d stor%s (%s); encode resources are "
                "planned with %d volumes each",
                ds,
                len(missing),
                "y" if len(missing) == 1 else "ies",
                ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else ""),
                DEFAULT_STORY_TRS,
            )
        return shapes

    def _story_rows(self, ds: str, rows, tr: float) -> tuple[int | None, float]:
        """(rows, TR) of the first readable response of a story's runs; (None, tr) if none."""
        from brainshape import responses

        for row in rows.itertuples():
            path = self.study.under_root(ds, row.response)
            if not path.is_file():
                continue
            try:
                found = responses.shape(path, row.format, row.key)
            except Exception:  # noqa: BLE001 - any unreadable header: plan with defaults
                continue
            header = found.tr if responses.plausible_tr(found.tr) else None
            return found.rows, float(row.tr or header or tr)
        return None, tr

    def response_values(self, ds: str) -> tuple[int, int]:
        """(values of the largest run, values of every run) of the dataset's response files,
        from the header of one run per story (demo datasets: the generator's grid), each
        story's count times its runs; a story without a readable run counts
        :data:`DEFAULT_STORY_TRS` volumes of :data:`DEFAULT_VOXELS` x 10 voxels."""
        if ds not in self._values:
            self._values[ds] = self._response_values(ds)
        return self._values[ds]

    def _response_values(self, ds: str) -> tuple[int, int]:
        from brainshape import demo, responses

        runs = self.study.runs(ds)
        per_story = {}
        for story, rows in runs.groupby("story", sort=False):
            if self.study.is_demo(ds):
                volumes = self.story_shapes(ds)[story][0]
                per_story[story] = volumes * math.prod(demo.GRID_SHAPE)
                continue
            per_story[story] = DEFAULT_STORY_TRS * DEFAULT_VOXELS * 10
            for row in rows.itertuples():
                try:
                    found = responses.shape(self.study.under_root(ds, row.response), row.format,
                                            row.key)  # fmt: skip
                except Exception:  # noqa: BLE001 - an unreadable header: plan with defaults
                    continue
                per_story[story] = found.rows * found.columns
                break
        counts = runs["story"].value_counts()
        return max(per_story.values()), int(sum(per_story[s] * counts[s] for s in per_story))

    def qc_mem_mb(self, ds: str) -> int:
        """Host memory (MiB) of the dataset's QC job (:func:`resources.qc_mem_mb`)."""
        return resources.qc_mem_mb(self.response_values(ds)[0])

    def qc_runtime_min(self, ds: str) -> int:
        """Wall minutes of the dataset's QC job (:func:`resources.qc_runtime_min`)."""
        return resources.qc_runtime_min(self.response_values(ds)[1])

    def targets_per_subject(self, ds: str, mode: str | None = None) -> int:
        """fMRI targets of one subject: ROIs x 2 hemispheres, or the voxels of those ROIs.

        ROIs are ``fmri.rois``, else every label of the atlas (the labels TSV); voxels are
        counted in the atlas image. Where the atlas cannot be read: :data:`DEFAULT_ROIS` ROIs,
        :data:`DEFAULT_VOXELS` voxels. ``mode`` overrides ``fmri.targets``.
        """
        mode = mode or self.config["fmri"]["targets"]
        if (ds, mode) not in self._targets:
            self._targets[(ds, mode)] = self._count_targets(ds, mode)
        return self._targets[(ds, mode)]

    def _count_targets(self, ds: str, mode: str) -> int:
        wanted = list(self.config["fmri"]["rois"] or []) or None
        if self.study.is_demo(ds):
            from brainshape import demo

            rois = [r for r in demo.ROIS if wanted is None or r in wanted]
            if mode == "roi_mean":
                return 2 * len(rois)
            voxels = demo.demo_atlas().voxels
            return sum(len(v) for (roi, _), v in voxels.items() if roi in rois)
        runs = self.study.runs(ds)
        if (runs["format"] == "hdf5").all():
            return self._count_columns(ds, runs.iloc[0], mode, wanted)
        try:
            atlas = self.study.atlas(ds)
        except BrainshapeError:
            atlas = None
        labels = _atlas_labels(atlas["labels"]) if atlas is not None else None
        if mode == "roi_mean":
            if wanted is not None:
                return 2 * len(wanted)
            return 2 * (len(labels) if labels else DEFAULT_ROIS)
        if atlas is None or labels is None or not atlas["image"].is_file():
            return DEFAULT_VOXELS
        import nibabel as nib
        import numpy as np

        keep = [labels[r] for r in (wanted or labels) if r in labels]
        try:
            data = np.asanyarray(nib.load(atlas["image"]).dataobj)
        except Exception:  # noqa: BLE001 - an unreadable image is planned with the default
            return DEFAULT_VOXELS
        return int(np.isin(data, keep).sum())

    def _count_columns(self, ds: str, row, mode: str, wanted: list[str] | None) -> int:
        """Targets of a subject whose responses are matrices (hdf5): from its label table
        (columns column, roi, hemisphere), else every column is one target set."""
        import pandas as pd

        from brainshape import responses

        labels = None
        if row["labels"] is not None and self.study.under_root(ds, row["labels"]).is_file():
            try:
                labels = pd.read_csv(self.study.under_root(ds, row["labels"]), sep="\t")
            except Exception:  # noqa: BLE001 - an unreadable table is planned with defaults
                labels = None
        if labels is not None and {"roi", "hemisphere"} <= set(labels.columns):
            if wanted is not None:
                labels = labels[labels["roi"].isin(wanted)]
            if mode == "roi_mean":
                return len(labels[["roi", "hemisphere"]].drop_duplicates())
            return len(labels)
        if mode == "roi_mean":
            return 1
        try:
            return responses.shape(
                self.study.under_root(ds, row["response"]), "hdf5", row["key"]
            ).columns
        except BrainshapeError:
            return DEFAULT_VOXELS

    def encode_dims(self, model: str | None) -> tuple[int, int]:
        """(feature layers including the embeddings, hidden units) of a model's features;
        ``None`` is a baseline: one layer of at most 3 features."""
        if model is None:
            return 1, 3
        layers, hidden = resources.model_dims(self.study.entry(model))
        return layers + 1, hidden

    def kept_story_shapes(
        self, ds: str, stories: list[str] | None = None
    ) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """Per story (``stories``, default every story of the dataset) its kept volumes
        (after ``fmri.trim_start``/``trim_end``) and words, and the volumes trimmed from each
        run (:meth:`story_shapes`)."""
        f = self.config["fmri"]
        trim = int(f["trim_start"]) + int(f["trim_end"])
        shapes = self.story_shapes(ds)
        chosen = [shapes[s] for s in (stories if stories is not None else shapes)]
        return tuple(max(1, n - trim) for n, _ in chosen), tuple(w for _, w in chosen), trim

    # --- encode and baseline jobs ---------------------------------------------------------------

    def encode_shape(
        self, ds: str, model: str | None, group: str | None = None
    ) -> resources.EncodeShape:
        """The :class:`resources.EncodeShape` of an encode job of ``group`` (the largest group
        when None); ``model`` None is a baseline job (one layer of word-rate features)."""
        e = self.config["encoding"]
        groups = self.study.subject_groups(ds)
        members = groups[group] if group is not None else max(groups.values(), key=len)
        stories = self.study.subject_stories(ds, members[0])
        kept, words, trim = self.kept_story_shapes(ds, stories)
        segments, sizes = self.encode_folds(ds, stories, kept)
        layers, hidden = self.encode_dims(model)
        return resources.EncodeShape(
            story_trs=kept,
            story_words=words,
            trimmed=trim,
            layers=layers,
            hidden=hidden,
            delays=len(e["delays"]),
            targets=self.targets_per_subject(ds) * len(members),
            # The pooled null cross-validates block-permuted copies beside the targets.
            null_copies=scoring.NULL_COPIES if int(e["n_permutations"]) else 0,
            n_alphas=len(set(e["alphas"])),
            target_chunk=int(e["target_chunk"]),
            n_permutations=int(e["n_permutations"]),
            predictions=scoring.needs_predictions(e["metrics"]),
            segments=tuple(len(s) for s in segments),
            sizes=sizes,
        )

    def encode_folds(self, ds: str, stories: list[str], kept: tuple[int, ...]):
        """(held-out segments, fold sizes) of an encode job over ``stories`` (sorted, as the
        job orders them) with ``kept`` TRs each: :func:`encoding.segments_of` on the runs
        sheet's fixed test stories, then :func:`ridge.fold_sizes` with the gap and the alpha
        selection."""
        from brainshape import encoding, ridge

        e = self.config["encoding"]
        runs = self.study.runs(ds)
        split = runs["split"] if "split" in runs.columns else None
        tests = set() if split is None else set(runs.loc[split.fillna("train") == "test", "story"])
        order = sorted(range(len(stories)), key=lambda i: stories[i])
        run_list = [
            {"n_trs": kept[i], "trim_start": 0, "trim_end": 0, "split": "test"}
            if stories[i] in tests
            else {"n_trs": kept[i], "trim_start": 0, "trim_end": 0, "split": "train"}
            for i in order
        ]
        bootstrap = None
        if e["alpha_selection"] == "bootstrap":
            bootstrap = ridge.Bootstrap(**e["bootstrap"]).checked()
        options = encoding.FoldOptions(e["folds"], e["n_blocks"], bootstrap)
        segments, test = encoding.segments_of(run_list, options, f"datasets.{ds}")
        gap = int(e["gap"]) if e["folds"] == "blocks" else 0
        return segments, ridge.fold_sizes(segments, gap, test, bootstrap)

    def encode_gpus(self, model: str | None = None) -> int:
        """GPUs of one encode job (``encoding.gpus``); baselines always run on CPU cores."""
        gpus = int(self.config["encoding"]["gpus"])
        if model is None:
            return 0
        if gpus and self.config["encoding"]["backend"] == "numpy":
            raise BrainshapeError(
                f"{self.study.source}: encoding.gpus is {gpus} but encoding.backend is 'numpy', "
                "which never uses a GPU; set encoding.backend to auto or torch, or "
                "encoding.gpus to 0"
            )
        return gpus

    def encode_gpu_bytes(
        self, ds: str, model: str, group: str | None = None
    ) -> tuple[float, float]:
        """(bytes an encode job's arrays need on its GPU, bytes one GPU offers to them: its
        usable memory less the CUDA context and workspaces)."""
        usable = self.gpu().memory_gib * 2**30 * float(self.config["gpu"]["usable"])
        need = resources.encode_gpu_bytes(self.encode_shape(ds, model, group))
        return need, usable - resources.GPU_OVERHEAD_BYTES

    def encode_mem_mb(self, ds: str, model: str | None, group: str | None = None) -> int:
        """Host memory (MiB) of an encode job (``model`` None: a baseline job), from the shape
        of the study (:func:`resources.encode_memory`); with ``encoding.gpus`` the CUDA
        context's share is added (:data:`resources.ENCODE_GPU_HOST_MIB`)."""
        overhead = resources.ENCODE_OVERHEAD_MIB
        if self.encode_gpus(model):
            overhead += resources.ENCODE_GPU_HOST_MIB
        return resources.encode_mem_mb(self.encode_shape(ds, model, group), overhead)

    def encode_rate(self, model: str | None) -> float:
        """GFLOP/s of an encode job: ``encoding.cpu_gflops`` x threads, or the GPU's rate for
        this engine with ``encoding.gpus``."""
        e = self.config["encoding"]
        if self.encode_gpus(model):
            return resources.encode_gpu_gflops(self.gpu(), e["gpu_tflops"])
        return float(e["cpu_gflops"]) * int(e["threads"])

    def encode_runtime_min(self, ds: str, model: str | None, group: str | None = None) -> int:
        """Wall minutes of an encode job: its FLOPs (:func:`resources.encode_flops`) at
        ``encoding.cpu_gflops`` x threads, or at the GPU's rate with ``encoding.gpus``."""
        rate = self.encode_rate(model)
        shape = self.encode_shape(ds, model, group)
        # Many variants and groups share a shape: count its FLOPs once (a loop over the folds).
        if shape not in self._flops:
            self._flops[shape] = resources.encode_flops(shape)
        return resources.encode_runtime_min(shape, gflops=rate, flops=self._flops[shape])

    def encode_half_shape(
        self, ds: str, model: str, group: str, half: str
    ) -> resources.EncodeShape:
        """The shape of a cross-fitting half's encode job: the subjects of its ``group``
        (:meth:`Study.crossfit_groups`) on the ``stories`` of the half they heard, a sample of
        their voxels (:func:`crossfit.sampled_count`), no permutation null."""
        from brainshape import crossfit

        shape = self.encode_shape(ds, model)
        members = self.study.crossfit_group_subjects(ds, half, group)
        stories = set(crossfit.half_stories(self.study.stories(ds), half))
        mine = [s for s in self.study.subject_stories(ds, members[0]) if s in stories]
        kept, words, _ = self.kept_story_shapes(ds, mine)
        # The half's own folds: its segments and the sizes of every split (the whole study's
        # would cost each half as much as the whole job).
        segments, sizes = self.encode_folds(ds, mine, kept)
        per_subject = self.targets_per_subject(ds)
        if self.config["fmri"]["targets"] == "voxels":
            fraction = float(self.config["regressions"]["crossfit_voxels"])
            sites = self.targets_per_subject(ds, "roi_mean")
            per_subject = crossfit.sampled_count(per_subject, fraction, sites)
        return dataclasses.replace(
            shape, story_trs=kept, story_words=words, segments=tuple(len(s) for s in segments),
            sizes=sizes, null_copies=0, n_permutations=0, targets=per_subject * len(members),
        )  # fmt: skip

    def encode_half_mem_mb(self, ds: str, model: str, group: str, half: str) -> int:
        """Host memory (MiB) of a cross-fitting half's encode job (:meth:`encode_mem_mb`)."""
        overhead = resources.ENCODE_OVERHEAD_MIB
        if self.encode_gpus(model):
            overhead += resources.ENCODE_GPU_HOST_MIB
        shape = self.encode_half_shape(ds, model, group, half)
        return resources.encode_mem_mb(shape, overhead)

    def encode_half_runtime_min(self, ds: str, model: str, group: str, half: str) -> int:
        """Wall minutes of a cross-fitting half's encode job, at the rate of
        :meth:`encode_runtime_min`."""
        shape = self.encode_half_shape(ds, model, group, half)
        return resources.encode_runtime_min(shape, gflops=self.encode_rate(model))

    def maps_mem_mb(self, ds: str, model: str) -> int:
        """Host memory (MiB) of a maps job: every row of the variant's encoding tables (one per
        layer, subject and target, about :data:`MAPS_BYTES_PER_ROW` bytes each while they are
        read, matched and merged) on top of :data:`MAPS_BASE_MB`."""
        layers, _ = self.encode_dims(model)
        rows = layers * len(self.study.subjects(ds)) * self.targets_per_subject(ds)
        return MAPS_BASE_MB + math.ceil(rows * MAPS_BYTES_PER_ROW / 2**20)

    # --- the shape stage -------------------------------------------------------------------------

    def layer_diagrams_mem_mb(self, ds: str, model: str) -> int:
        """Host memory (MiB) of a layer_diagrams job (:func:`resources.layer_diagrams_memory`):
        every layer's diagram, no brain cloud."""
        return resources.layer_diagrams_mem_mb(**{**self.topology_shape(ds, model), "clouds": 0})

    def topology_pairs_mem_mb(self, ds: str, model: str) -> int:
        """Host memory (MiB) of a topology_pairs job: every layer's geometry against every
        brain cloud, no diagram computed, each layer's cloud on the whole time base once."""
        return resources.layer_diagrams_mem_mb(
            **self.topology_shape(ds, model), persistence=False, whole=True
        )

    def topology_pairs_runtime_min(self, ds: str, model: str, stories=None) -> int:
        """Wall minutes of a topology_pairs job (:func:`resources.topology_pairs_runtime_min`):
        every brain cloud (ROI x hemisphere, and each subject's with ``per_subject``) and its
        ``null_shifts`` null clouds against every layer; with ``stories`` (a cross-fitting
        half), at their share of the landmarks and without Wasserstein distances."""
        t = self.config["topology"]
        shape = dict(self.topology_shape(ds, model))
        distances = len(t["wasserstein"]) * (int(t["maxdim"]) + 1)
        if stories is not None:
            total = sum(self.kept_story_shapes(ds)[0])
            share = sum(self.kept_story_shapes(ds, list(stories))[0]) / max(total, 1)
            shape["n_points"] = int(math.ceil(shape["n_points"] * share))
            distances = 0
        sites = self.targets_per_subject(ds, "roi_mean")
        if t["per_subject"]:
            sites *= 1 + len(self.study.subjects(ds))
        layers, _ = self.encode_dims(model)
        return resources.topology_pairs_runtime_min(
            n_points=shape["n_points"],
            layers=layers,
            brain_clouds=sites,
            draws=int(t["null_shifts"]),
            measures=len(t["measures"]),
            distances=distances,
        )

    def topology_shape(self, ds: str, model: str) -> dict:
        """Keyword arguments of :func:`resources.layer_diagrams_memory` for one variant.

        ``clouds`` and ``cloud_columns`` describe what a topology_pairs job holds: every layer's
        prepared cloud (points, distances, ranks and Gram matrix: about two clouds of the
        formula's kind each) and two brain clouds at a time (the observed one and one of its
        null's, prepared one after another).
        """
        t = self.config["topology"]
        draws = int(t["stability_seeds"])
        kept, words, trim = self.kept_story_shapes(ds)
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
            # Each layer's prepared clouds at every landmark draw, and per brain cloud the
            # observed one, one of the null's and one per extra draw.
            "clouds": 2 * layers * (1 + draws) + 2 + draws,
            "cloud_columns": max(hidden, columns, n_points),
        }


def _atlas_labels(path) -> dict[str, int] | None:
    """Label name -> index from an atlas labels TSV (columns index, name); None if unreadable."""
    if not path.is_file():
        return None
    import pandas as pd

    try:
        table = pd.read_csv(path, sep="\t")
    except Exception:  # noqa: BLE001 - an unreadable TSV is planned with defaults
        return None
    if not {"index", "name"} <= set(table.columns):
        return None
    return {str(n): int(i) for i, n in zip(table["index"], table["name"], strict=True) if i}
