"""What each job computes with: the ``params`` of every rule, from the study.

A job reruns when its params change (Snakemake's default rerun triggers), so each function
returns exactly what its job's output depends on and nothing else: editing one variant of a
registry entry must not rerun its siblings, a new subject must not rerun feature extraction.
Paths of files other rules write never appear here; ``common.smk`` passes in the few paths a
job needs as parameters (a model's folder, the demo dataset's folder).
"""

from __future__ import annotations

from brainshape.errors import BrainshapeError
from brainshape.study import Study


def demo(study: Study, ds: str, dataset_dir: str, model_root: str) -> dict:
    """Settings of the demo generator for dataset ``ds``, written to ``dataset_dir``."""
    d = study.dataset(ds)
    if d["bids_root"].rstrip("/") != dataset_dir:
        raise BrainshapeError(
            f"{study.source}: datasets.{ds} is a demo dataset, so its "
            f"bids_root must be '{dataset_dir}' (got '{d['bids_root']}')"
        )
    f = study.config["features"]
    return {
        "subjects": study.subjects(ds),
        "stories": study.stories(ds),
        "tr": d["tr"] if d["tr"] is not None else 2.0,
        **{k: study.config["demo"][k] for k in ("seed", "snr", "ar1")},
        "planted": [dict(p) for p in study.config["demo"]["planted"]],
        "registry": study.config["registry"],
        "model_root": model_root,
        **{k: f[k] for k in ("context_tokens", "stride", "batch_size")},
    }


def words(study: Study, ds: str) -> dict:
    """Per story its word-timing file, format, TextGrid tier and transcript; the labels that are
    not words; the case the model reads them in."""
    words = study.dataset(ds)["words"]
    return {
        "sources": study.word_sources(ds),
        "nonspeech": list(words["nonspeech"]),
        "case": words["case"],
    }


def prepare_model(study: Study, model: str) -> dict:
    """The registry entry without its variants: editing the model's source, config or seed
    prepares it again; adding or editing a variant does not."""
    return {k: v for k, v in study.entry(model).items() if k != "variants"}


def quantize(study: Study, model: str, variant: str, prepared: str | None) -> dict:
    """GPTQ settings of a variant quantised here; ``prepared`` is the model's prepared folder
    (None for hub models, which are read from the Hugging Face cache)."""
    entry, settings = study.entry(model), study.settings(model, variant)
    return {
        "source": prepared if prepared is not None else entry["hf_id"],
        "revision": None if prepared is not None else entry.get("revision"),
        "bits": int(settings.get("bits", 4)),
        "group_size": int(settings.get("group_size", 128)),
    }


def features(study: Study, ds: str, model: str, variant: str, model_dir: str) -> dict:
    """``model_dir``: the folder to load from ('' for the Hugging Face cache)."""
    f = study.config["features"]
    return {
        "model": model,
        "variant": variant,
        # Only this variant of the entry: editing a sibling variant leaves this job alone.
        "entry": {
            **study.entry(model),
            "variants": {variant: study.settings(model, variant)},
        },
        "model_dir": model_dir,
        "stories": study.stories(ds),
        **{k: f[k] for k in ("context_tokens", "stride", "batch_size", "word_token")},
    }


def fmri(study: Study, ds: str, sub: str) -> dict:
    """The subject's runs (sheet rows, paths resolved), the atlas, and how to clean them."""
    d, f = study.dataset(ds), study.config["fmri"]
    atlas = study.atlas(ds) if study.needs_atlas(ds) else None
    keys = ("detrend", "standardize", "high_pass", "trim_start", "trim_end")
    runs = study.subject_runs(ds, sub)
    return {
        "subject": sub,
        "runs": [{k: _plain(v) for k, v in row.items()} for row in runs.to_dict("records")],
        "atlas": None if atlas is None else [str(atlas["image"]), str(atlas["labels"])],
        "targets": f["targets"],
        "rois": f["rois"],
        "min_atlas_coverage": f["min_atlas_coverage"],
        "cleaning": {
            "confounds": list(f["confounds"]),
            **{k: f[k] for k in keys},
            "tr": d["tr"],
            "tr_overrides_header": d["tr_overrides_header"],
        },
    }


def qc(study: Study, ds: str) -> dict:
    """Every run of the runs sheet (excluded ones too: the QC lists them) and the thresholds of
    the checks; ``fmri.qc.exclude`` acts on the later stages, not on what is measured."""
    return {"runs": study.sheet_rows(ds), "thresholds": qc_thresholds(study)}


def qc_thresholds(study: Study) -> dict:
    return {k: v for k, v in study.config["fmri"]["qc"].items() if k != "exclude"}


def plot_qc(study: Study, ds: str) -> dict:
    return {"thresholds": qc_thresholds(study), "exclude": qc_exclude(study)}


def qc_exclude(study: Study) -> list[str]:
    """The checks whose flags exclude a run from the stages after fmri (empty: flags only)."""
    return list(study.config["fmri"]["qc"]["exclude"])


def _plain(value):
    """A sheet cell as a plain Python value (numpy scalars are not YAML/JSON-friendly)."""
    return value.item() if hasattr(value, "item") else value


def ridge(study: Study) -> dict:
    """Solver options shared by model and baseline encoding jobs."""
    e = study.config["encoding"]
    if e["folds"] == "blocks" and e["n_blocks"] is None:
        raise BrainshapeError(
            f"{study.source}: encoding.folds is 'blocks' but encoding.n_blocks is not set; "
            "give the number of contiguous blocks (at least 3)"
        )
    keys = ("folds", "n_blocks", "gap", "backend", "dtype", "n_permutations")
    out = {k: e[k] for k in (*keys, "permutation_block", "seed", "metrics", "segment_trs")}
    out["alpha_selection"] = e["alpha_selection"]
    if e["alpha_selection"] == "bootstrap":
        # Only where it is used: editing the bootstrap keys reruns nothing that nests.
        out["bootstrap"] = dict(e["bootstrap"])
    return out


def encode(study: Study, ds: str, group: str | None = None) -> dict:
    """An encode job of subject group ``group``; None: every subject (a baseline job)."""
    e = study.config["encoding"]
    subjects = study.subjects(ds) if group is None else study.group_subjects(ds, group)
    return {
        "stories": study.stories(ds),
        "subjects": subjects,
        "delays": list(e["delays"]),
        "alphas": [float(a) for a in e["alphas"]],
        "lanczos_window": e["lanczos_window"],
        "target_chunk": e["target_chunk"],
        **ridge(study),
    }


def encode_half(study: Study, ds: str, group: str, half: str) -> dict:
    """An encode job of one half of the stories (cross-fitting): the stories of ``half`` only,
    the subjects of its group (:meth:`Study.crossfit_groups`), a sample of each ROI's voxels
    (``voxel_fraction``) and no permutation null (the halves' scores feed the regressions, not
    p-values)."""
    from brainshape import crossfit

    voxels = study.config["fmri"]["targets"] == "voxels"
    return {
        **encode(study, ds),
        "subjects": study.crossfit_group_subjects(ds, half, group),
        "stories": crossfit.half_stories(study.stories(ds), half),
        "n_permutations": 0,
        "voxel_fraction": float(study.config["regressions"]["crossfit_voxels"]) if voxels else 1.0,
    }


def baseline(study: Study, ds: str, name: str, group: str) -> dict:
    return {**encode(study, ds, group), "baseline": name}


def _cloud_settings(study: Study) -> dict:
    """Settings every cloud, brain or layer, is prepared with."""
    t = study.config["topology"]
    return {"metric": t["metric"], "components": t["components"]}


def topology_timebase(study: Study, ds: str) -> dict:
    t = study.config["topology"]
    emb = t["embedding"]
    # ROI-mean clouds are delay-embedded: the time base starts where the embedding reaches.
    roi_mean = study.config["fmri"]["targets"] == "roi_mean"
    return {
        "stories": study.stories(ds),
        "delay_s": float(t["delay_s"]),
        "history_s": (int(emb["dimension"]) - 1) * float(emb["lag_s"]) if roi_mean else 0.0,
        **{k: t[k] for k in ("max_points", "seed", "stability_seeds")},
    }


def topology_brain(study: Study, ds: str) -> dict:
    t = study.config["topology"]
    return {
        **_cloud_settings(study),
        "embedding": dict(t["embedding"]),
        **{k: t[k] for k in ("maxdim", "backend", "per_subject")},
    }


def layer_diagrams(study: Study, ds: str) -> dict:
    t = study.config["topology"]
    return {
        "stories": study.stories(ds),
        "window": study.config["encoding"]["lanczos_window"],
        **_cloud_settings(study),
        **{k: t[k] for k in ("maxdim", "backend")},
    }


#: The ``topology`` keys of the geometry's null (:func:`brainshape.topology.nulls.null_settings`).
NULL_KEYS = (
    "null_shifts", "null_scheme", "null_min_stories", "null_shift_factor",
    "null_min_story_taus", "seed",
)  # fmt: skip


def topology_pairs(study: Study, ds: str, half: str | None = None) -> dict:
    """A pairing job; with ``half`` (cross-fitting), on the stories of that half only."""
    from brainshape import crossfit

    t = study.config["topology"]
    only = None if half is None else crossfit.half_stories(study.stories(ds), half)
    return {
        "only_stories": only,
        "stories": study.stories(ds),
        "window": study.config["encoding"]["lanczos_window"],
        **_cloud_settings(study),
        "orders": [dict(o) for o in t["wasserstein"]],
        "measures": list(t["measures"]),
        "summaries": list(t["summaries"]),
        "null": {k: t[k] for k in NULL_KEYS},
    }


def plot_topology(study: Study, ds: str) -> dict:
    return {"measures": list(study.config["topology"]["measures"])}


def regressions(study: Study, ds: str, model_dirs: dict[str, str]) -> dict:
    """``model_dirs``: each model's prepared folder ('' for hub models), whose recorded
    parameter count stands in where the registry gives none."""
    r = dict(study.config["regressions"])
    r["feature_sets"] = {k: list(v) for k, v in r["feature_sets"].items()}
    r["published"] = study.published_scores() is not None
    r["families"] = study.families()
    r["kinds"] = [[m, v, study.settings(m, v)["kind"]] for m, v in study.model_variants()]
    # Published scores without a variant column are matched to each model's first full
    # (trained, unquantized) variant.
    r["default_variants"] = {m: study.default_variant(m) for m in study.models()}
    # Parameter counts for the nuisance model and the scaling plot: the registry's, else the
    # count the prepared model recorded.
    r["registry"] = {m: dict(study.entry(m)) for m in study.models()}
    r["model_dirs"] = model_dirs
    return r


def counts(study: Study, ds: str) -> dict:
    """What a figure's footnote says it shows: subjects and stories (and stories per subject)."""
    heard = sorted({len(study.subject_stories(ds, s)) for s in study.subjects(ds)})
    per = "" if not heard else str(heard[0]) if heard[0] == heard[-1] else f"{heard[0]}-{heard[-1]}"
    return {"subjects": len(study.subjects(ds)), "stories": len(study.stories(ds)),
            "stories_per_subject": per}  # fmt: skip


def _grids(study: Study, ds: str) -> dict[str, str | None]:
    grids = {s: study.grid_file(ds, s) for s in study.subjects(ds)}
    return {s: None if g is None else str(g) for s, g in grids.items()}


def maps(study: Study, ds: str) -> dict:
    """A model variant's maps (or the noise ceiling's): each subject's grid image (None for
    response matrices), the atlas ROI-mean targets are painted on, and ``maps.per_layer``."""
    atlas = study.atlas(ds) if study.needs_atlas(ds) else None
    f = study.config["fmri"]
    return {
        "grids": _grids(study, ds),
        "atlas": None if atlas is None else [str(atlas["image"]), str(atlas["labels"])],
        "rois": f["rois"],
        "targets": f["targets"],
        "per_layer": study.config["maps"]["per_layer"],
    }


def plot_maps(study: Study, ds: str, model: str) -> dict:
    """The variants of ``model`` (in the order of the figure's rows), the template space (for
    the surface views), and the figure's n."""
    return {
        "variants": study.variants(model),
        "space": study.space(ds),
        "targets": study.config["fmri"]["targets"],
        "counts": counts(study, ds),
    }


def summary(study: Study, ds: str) -> dict:
    """What the summary says beside its tables: what is mapped, and the figures' n."""
    return {
        "targets": study.config["fmri"]["targets"],
        "gridded": study.needs_atlas(ds),
        "counts": counts(study, ds),
    }
