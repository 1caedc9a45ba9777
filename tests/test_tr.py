"""The TR of a NIfTI run, wherever one is read: a header's TR outside 0.3-5 s is set aside (SPM's
0, a lost msec unit), a header and a given TR more than 2 % apart stop unless the given one is
declared to win, and fMRIPrep's JSON beside the image is a source."""

import json
import re

import nibabel as nib
import numpy as np
import pytest

from brainshape import responses
from brainshape.errors import BrainshapeError


def image(path, tr, unit="sec"):
    """A small 4-D image whose header says ``tr`` in ``unit``."""
    img = nib.Nifti1Image(np.zeros((2, 2, 2, 5), dtype=np.float32), np.eye(4))
    img.header.set_xyzt_units("mm", unit)
    img.header.set_zooms((1.0, 1.0, 1.0, tr))
    nib.save(img, path)
    return path


def header_tr(path) -> float:
    return responses.nifti_tr(nib.load(path))


def test_header_units_are_read_and_implausible_headers_set_aside(tmp_path):
    assert header_tr(image(tmp_path / "ms.nii.gz", 1500, "msec")) == 1.5
    lost = image(tmp_path / "lost.nii.gz", 1500)  # 1500 with its msec unit lost: 1500 s
    with pytest.raises(BrainshapeError) as error:
        responses.run_tr(lost, header_tr(lost))
    assert str(error.value) == (
        f"{lost} says TR 1500 s in its header, outside the 0.3-5 s a repetition time can be (a "
        "TR in ms whose unit was lost, or a placeholder); give it in the runs sheet's tr column "
        "(or the dataset's tr)"
    )
    spm = image(tmp_path / "spm.nii.gz", 0.0)  # SPM writes 0 into its 4-D images
    with pytest.raises(BrainshapeError, match=re.escape(f"{spm} states no TR in its header; ")):
        responses.run_tr(spm, header_tr(spm))
    # A given TR stands in for a header without a usable one: no override needed.
    assert responses.run_tr(lost, header_tr(lost), responses.configured_tr(1.5)) == 1.5
    assert responses.run_tr(spm, header_tr(spm), responses.configured_tr(2.0)) == 2.0


def test_disagreement_beyond_two_percent_needs_the_override(tmp_path):
    spm_one = image(tmp_path / "one.nii.gz", 1.0)  # SPM's other placeholder is in range
    given = responses.configured_tr(2.0)
    with pytest.raises(BrainshapeError) as error:
        override = "set datasets.alice.tr_overrides_header: true"
        responses.run_tr(spm_one, 1.0, given, override=override)
    assert str(error.value) == (
        f"{spm_one}: its header says TR 1 s but the config (or runs sheet) says 2 s; remove the "
        "configured tr to use the header's, or, if the header is wrong, set "
        "datasets.alice.tr_overrides_header: true"
    )
    assert responses.run_tr(spm_one, 1.0, given, overrides_header=True) == 2.0
    # Narratives: 17 sidecars say 1.52 s where the images run at 1.5 s (1.3 %): they agree.
    assert responses.trs_agree(1.5, 1.52) and not responses.trs_agree(1.0, 2.0)
    assert responses.run_tr(spm_one, 1.5, responses.configured_tr(1.52)) == 1.52
    with pytest.raises(BrainshapeError, match=r"the config \(or runs sheet\) says TR 1500 s, out"):
        responses.run_tr(spm_one, 1.5, responses.configured_tr(1500))


def test_fmriprep_sidecar_beside_the_image_is_a_source(tmp_path):
    bold = image(tmp_path / "sub-01_task-a_desc-preproc_bold.nii.gz", 0.0)
    side = tmp_path / "sub-01_task-a_desc-preproc_bold.json"
    assert responses.image_sidecar(bold) == side
    side.write_text(json.dumps({"RepetitionTime": 1.5, "SkullStripped": False}))
    assert responses.run_tr(bold, header_tr(bold)) == 1.5
    image(bold, 2.0)
    with pytest.raises(BrainshapeError) as error:
        responses.run_tr(bold, header_tr(bold), override="set datasets.x.tr_overrides_header: true")
    assert str(error.value) == (
        f"{bold}: its header says TR 2 s but its sidecar {side} says 1.5 s; correct "
        f"RepetitionTime in {side.name} to use the header's, or, if the header is wrong, set "
        "datasets.x.tr_overrides_header: true"
    )
    # The runs sheet's (or config's) TR comes first: the sidecar is then not consulted.
    assert responses.run_tr(bold, 2.0, responses.configured_tr(2.0)) == 2.0
    side.write_text(json.dumps({"RepetitionTime": "1.5"}))
    with pytest.raises(BrainshapeError, match="RepetitionTime is '1.5', not a number of seconds"):
        responses.json_tr(side)
