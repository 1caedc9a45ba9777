import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import brainshape
from brainshape import stimuli
from brainshape.errors import BrainshapeError

DATA = Path(__file__).parent / "data" / "stimuli"
STORIES = Path(brainshape.__file__).parent / "data" / "stories"

# The words of the hand-written TextGrid and events fixtures.
FIXTURE = pd.DataFrame(
    {
        "word": ['"Wait,"', "she", "said.", "well-known"],
        "onset": [0.5, 1.0, 1.2, 2.25],
        "offset": [0.8, 1.2, 1.5, 2.75],
        "aligned": [True] * 4,
    }
)


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def assert_table(table: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(table.columns) == ["word", "onset", "offset", "aligned"]
    assert table["word"].tolist() == expected["word"].tolist()
    np.testing.assert_allclose(table["onset"], expected["onset"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(table["offset"], expected["offset"], rtol=0, atol=1e-9)
    assert table["onset"].dtype == np.float64 and table["offset"].dtype == np.float64
    assert table["aligned"].dtype == bool
    assert table["aligned"].tolist() == expected["aligned"].tolist()


# --- parsing hand-written files ------------------------------------------------------------------


def test_gentle_keeps_punctuation_and_interpolates_words_not_found_in_audio():
    table = stimuli.read_gentle(DATA / "align.json")
    # said (index 2) ends aligned at 1.2-1.5, known (index 5) at 2.4-2.7: The and well sit
    # at 1/3 and 2/3 of the way by position; stop, after the last aligned word, takes its times.
    expected = pd.DataFrame(
        {
            "word": [
                '"Wait,"',
                "she",
                "said.",
                "The",
                "well-",
                "known",
                "ferry",
                "didn't",
                "stop.",
            ],
            "onset": [0.5, 1.0, 1.2, 1.6, 2.0, 2.4, 2.8, 3.3, 3.3],
            "offset": [0.8, 1.2, 1.5, 1.9, 2.3, 2.7, 3.1, 3.6, 3.6],
            "aligned": [True, True, True, False, False, True, True, True, False],
        }
    )
    assert_table(table, expected)  # "um" (not in the transcript) is left out


def test_gentle_opening_quote_goes_with_the_next_word(tmp_path):
    transcript = 'He said, "Go\nnow."'
    words = [
        {"word": w, "startOffset": s, "endOffset": s + len(w), "case": "success", "start": t}
        for w, s, t in (("He", 0, 1.0), ("said", 3, 2.0), ("Go", 10, 3.0), ("now", 13, 4.0))
    ]
    for w in words:
        w["end"] = w["start"] + 0.5
    path = tmp_path / "align.json"
    path.write_text(json.dumps({"transcript": transcript, "words": words}))
    assert stimuli.read_gentle(path)["word"].tolist() == ["He", "said,", '"Go', 'now."']


def test_textgrid_long_format():
    assert_table(stimuli.read_textgrid(DATA / "long.TextGrid"), FIXTURE)
    phones = stimuli.read_textgrid(DATA / "long.TextGrid", tier="phones")
    assert phones["word"].tolist() == ["W"]  # "sil" skipped


def test_textgrid_short_format_and_utf16_give_the_same_words(tmp_path):
    assert_table(stimuli.read_textgrid(DATA / "short.TextGrid"), FIXTURE)
    utf16 = tmp_path / "utf16.TextGrid"
    utf16.write_bytes((DATA / "long.TextGrid").read_text().encode("utf-16"))
    assert_table(stimuli.read_textgrid(utf16), FIXTURE)


def test_events_keep_only_word_rows():
    assert_table(stimuli.read_events(DATA / "events.tsv"), FIXTURE)
    files = stimuli.read_events(DATA / "events.tsv", word_column="stim_file")
    assert files["word"].tolist() == ["ferry.wav"] * 4
    noise = stimuli.read_events(DATA / "events.tsv", trial_type="noise", word_column="onset")
    assert noise["word"].tolist() == ["1.5"] and noise["offset"].tolist() == [2.25]


def test_events_without_trial_type_take_every_row(tmp_path):
    path = tmp_path / "events.tsv"
    path.write_text("onset\tduration\tword\n1\t0.5\tNA\n2\t0.25\tnull\n")
    table = stimuli.read_events(path)
    assert table["word"].tolist() == ["NA", "null"]  # words, not missing values
    assert table["offset"].tolist() == [1.5, 2.25]


def test_read_words_dispatches_and_checks_options():
    assert_table(stimuli.read_words(DATA / "short.TextGrid", "textgrid", tier="words"), FIXTURE)
    assert_table(stimuli.read_words(DATA / "events.tsv", "events"), FIXTURE)
    with pytest.raises(
        BrainshapeError,
        match=exactly(
            "unknown word-timing format 'praat'; words.format must be one of gentle, textgrid, "
            "events, annotations"
        ),
    ):
        stimuli.read_words(DATA / "long.TextGrid", "praat")
    with pytest.raises(
        BrainshapeError,
        match=exactly(
            "word-timing format 'gentle' takes no option tier (options: nonspeech); drop it "
            "from the call"
        ),
    ):
        stimuli.read_words(DATA / "align.json", "gentle", tier="words")


# --- writers -------------------------------------------------------------------------------------


def _story_table() -> tuple[pd.DataFrame, float]:
    words = ['"Wait,"', "she", "said.", "—", "The", "well-known", "ferry", "didn't", "stop?"]
    rng = np.random.default_rng(3)
    gaps = rng.uniform(0.0, 0.4, len(words))
    gaps[4] = 0.0  # two words that touch: no silence interval between them
    lengths = rng.uniform(0.1, 0.5, len(words))
    onset = 1.7 + np.cumsum(gaps) + np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    table = pd.DataFrame({"word": words, "onset": onset, "offset": onset + lengths})
    return table, float(table["offset"].iloc[-1] + 3.0)


def test_each_writer_round_trips(tmp_path):
    table, duration = _story_table()
    expected = table.assign(aligned=True)
    stimuli.write_gentle(table, tmp_path / "align.json")
    stimuli.write_textgrid(table, tmp_path / "story.TextGrid", duration)
    stimuli.write_events(table, tmp_path / "events.tsv")
    assert_table(stimuli.read_gentle(tmp_path / "align.json"), expected)
    assert_table(stimuli.read_textgrid(tmp_path / "story.TextGrid"), expected)
    assert_table(stimuli.read_events(tmp_path / "events.tsv"), expected)


def test_gentle_writer_layout(tmp_path):
    table, _ = _story_table()
    stimuli.write_gentle(table, tmp_path / "align.json")
    data = json.loads((tmp_path / "align.json").read_text())
    assert data["transcript"] == " ".join(table["word"])
    assert [w["word"] for w in data["words"]] == [
        "Wait", "she", "said", "—", "The", "well-known", "ferry", "didn't", "stop"
    ]  # fmt: skip
    assert [w["alignedWord"] for w in data["words"]][:5] == ["wait", "she", "said", "—", "the"]
    for entry in data["words"]:
        assert data["transcript"][entry["startOffset"] : entry["endOffset"]] == entry["word"]
        assert entry["case"] == "success"


def test_textgrid_writer_fills_every_gap_with_silence(tmp_path):
    table, duration = _story_table()
    path = tmp_path / "story.TextGrid"
    stimuli.write_textgrid(table, path, duration)
    (tier,) = stimuli.textgrid_tiers(path)
    assert (tier.name, tier.kind, tier.error) == ("words", "IntervalTier", None)
    items = tier.items
    starts = [a for a, _, _ in items]
    ends = [b for _, b, _ in items]
    assert starts[0] == 0 and ends[-1] == duration and starts[1:] == ends[:-1]
    assert [label for *_, label in items if label] == table["word"].tolist()
    assert len(items) == 2 * len(table)  # a silence before each word but the touching one, + end


def test_three_formats_give_the_same_words_table(tmp_path):
    tables = {"ferry": _story_table(), "orchard": (FIXTURE[["word", "onset", "offset"]], 5.0)}
    paths: dict[str, dict[str, Path]] = {"gentle": {}, "textgrid": {}, "events": {}}
    for story, (table, duration) in tables.items():
        paths["gentle"][story] = tmp_path / story / "align.json"
        paths["textgrid"][story] = tmp_path / story / f"{story}.TextGrid"
        paths["events"][story] = tmp_path / story / "events.tsv"
        stimuli.write_gentle(table, paths["gentle"][story])
        stimuli.write_textgrid(table, paths["textgrid"][story], duration)
        stimuli.write_events(table, paths["events"][story])
    out = {fmt: stimuli.words_table(sources, fmt) for fmt, sources in paths.items()}
    reference = out["textgrid"]
    assert list(reference.columns) == ["story", "word_index", "word", "onset", "offset", "aligned"]
    assert reference["story"].tolist() == ["ferry"] * 9 + ["orchard"] * 4
    assert reference["word_index"].tolist() == list(range(9)) + list(range(4))
    assert reference["word_index"].dtype == np.int64 and reference["aligned"].dtype == bool
    assert pd.api.types.is_string_dtype(reference["story"])
    assert pd.api.types.is_string_dtype(reference["word"])
    for fmt in ("gentle", "events"):
        pd.testing.assert_frame_equal(out[fmt], reference, check_exact=False, rtol=0, atol=1e-9)
    # story order is the order of the sources, not alphabetical
    flipped = stimuli.words_table(dict(reversed(paths["events"].items())), "events")
    assert flipped["story"].iloc[0] == "orchard"


def test_writers_refuse_tables_they_cannot_write(tmp_path):
    table, duration = _story_table()
    path = tmp_path / "x.TextGrid"
    overlap = table.copy()
    overlap.loc[1, "offset"] = overlap.loc[2, "onset"] + 0.05
    message = (
        f"cannot write {path}: word 1 ('she') ends at {overlap.loc[1, 'offset']:g} s, after the "
        f"next word starts at {overlap.loc[2, 'onset']:g} s; TextGrid intervals cannot overlap, "
        "fix the times of the words table"
    )
    with pytest.raises(BrainshapeError, match=exactly(message)):
        stimuli.write_textgrid(overlap, path, duration)
    with pytest.raises(BrainshapeError, match="outside the duration 0-1 s"):
        stimuli.write_textgrid(table, path, 1.0)
    with pytest.raises(
        BrainshapeError,
        match=exactly(
            f"cannot write {path}: the words table lacks column(s) offset; it needs word, onset "
            "and offset (seconds)"
        ),
    ):
        stimuli.write_events(table.drop(columns="offset"), path)
    assert not path.exists()


# --- malformed files -----------------------------------------------------------------------------


def _gentle(words: list[dict], transcript: str = "one two") -> str:
    return json.dumps({"transcript": transcript, "words": words})


ONE = {"word": "one", "startOffset": 0, "endOffset": 3, "case": "success", "start": 1, "end": 2}
TWO = {"word": "two", "startOffset": 4, "endOffset": 7, "case": "success", "start": 3, "end": 4}
FIX_GENTLE = "re-run Gentle on this story or fix the file"

GENTLE_CASES = {
    "bad_json": (
        '{"transcript": "one"',
        "{p} is not valid JSON (Expecting ',' delimiter: line 1 column 21 (char 20)); give the "
        "align.json that Gentle wrote, or set words.format to the format of the file",
    ),
    "no_words_key": (
        '{"transcript": "one"}',
        f"{{p}} lacks the key 'words'; a Gentle align.json needs 'transcript' and 'words', "
        f"{FIX_GENTLE}",
    ),
    "no_offset": (
        _gentle([ONE, {k: v for k, v in TWO.items() if k != "startOffset"}]),
        "{p}: word 1 ('two') lacks 'startOffset'; every Gentle word needs 'startOffset', "
        f"'endOffset' and 'case', {FIX_GENTLE}",
    ),
    "no_end": (
        _gentle([ONE, {k: v for k, v in TWO.items() if k != "end"}]),
        f"{{p}}: word 1 ('two') is aligned (case 'success') but lacks 'end'; {FIX_GENTLE}",
    ),
    "nan_time": (
        _gentle([ONE, {**TWO, "start": float("nan")}]),
        f"{{p}}: word 1 ('two') has no valid time (onset nan, offset 4.0); {FIX_GENTLE}",
    ),
    "ends_first": (
        _gentle([ONE, {**TWO, "end": 2.5}]),
        f"{{p}}: word 1 ('two') ends at 2.5 s, before it starts at 3 s; {FIX_GENTLE}",
    ),
    "backwards": (
        _gentle([ONE, {**TWO, "start": 0.5}]),
        "{p}: word 1 ('two') starts at 0.5 s, before word 0 ('one') at 1 s; words must be in "
        f"time order, {FIX_GENTLE}",
    ),
    "empty": (_gentle([]), f"{{p}} holds no words; {FIX_GENTLE}"),
    "none_aligned": (
        _gentle([{**ONE, "case": "not-found-in-audio"}, {**TWO, "case": "not-found-in-audio"}]),
        "{p}: none of its 2 words was aligned to the audio (no word has case 'success'); check "
        "that the audio and the transcript belong together and re-run Gentle",
    ),
}


@pytest.mark.parametrize("case", GENTLE_CASES)
def test_malformed_gentle(tmp_path, case):
    text, message = GENTLE_CASES[case]
    path = tmp_path / "align.json"
    path.write_text(text)
    with pytest.raises(BrainshapeError, match=exactly(message.format(p=path))):
        stimuli.read_gentle(path)


def test_missing_files(tmp_path):
    fix = "check the dataset's words.path in the config (relative to bids_root) or create the file"
    path = tmp_path / "nope"
    for reader, what in (
        (stimuli.read_gentle, "Gentle alignment"),
        (stimuli.read_textgrid, "TextGrid"),
        (stimuli.read_events, "events file"),
    ):
        with pytest.raises(BrainshapeError, match=exactly(f"{what} {path} does not exist; {fix}")):
            reader(path)
    with pytest.raises(
        BrainshapeError,
        match=exactly(
            f"story text {path} does not exist; give the path of a UTF-8 text file of the story"
        ),
    ):
        stimuli.story_words(path)
    (tmp_path / "blank.txt").write_text(" \n\n")
    with pytest.raises(BrainshapeError, match="holds no words; write the story into it"):
        stimuli.story_words(tmp_path / "blank.txt")


FIX_TG = "save it from Praat as a text TextGrid or fix the file"
LONG = (DATA / "long.TextGrid").read_text()
SHORT = (DATA / "short.TextGrid").read_text()

TEXTGRID_CASES = {
    "not_textgrid": (
        "xmin = 0\n",
        '{p} is not a TextGrid: it does not start with File type = "ooTextFile" and Object '
        'class = "TextGrid", nor with "Praat chronological TextGrid text file"; '
        f"{FIX_TG}",
    ),
    "truncated": (
        SHORT[: SHORT.index('"she"')],
        f"{{p}} is not a valid TextGrid: it ends where the text of item 4 of tier 1 ('words') "
        f"was expected; {FIX_TG}",
    ),
    "undefined": (
        SHORT.replace("1.2\n1.5", "1.2\n--undefined--", 1),
        f"{{p}} is not a valid TextGrid: unexpected '--undefined--' on line 26; {FIX_TG}",
    ),
    "ends_first": (
        SHORT.replace("1.2\n1.5", "1.2\n1.1", 1),
        f"{{p}}: word 2 ('said.') ends at 1.1 s, before it starts at 1.2 s; {FIX_TG}",
    ),
    "backwards": (
        LONG.replace("xmin = 2.25", "xmin = 0.25", 1),
        "{p}: word 3 ('well-known') starts at 0.25 s, before word 2 ('said.') at 1.2 s; words "
        f"must be in time order, {FIX_TG}",
    ),
    "silence_only": (
        SHORT.replace('"she"', '"sp"')
        .replace('"said."', '""')
        .replace('"""Wait,"""', '"SIL"')
        .replace('"well-known"', '"{SL}"'),
        f"{{p}} holds no words; {FIX_TG}",
    ),
}


@pytest.mark.parametrize("case", TEXTGRID_CASES)
def test_malformed_textgrid(tmp_path, case):
    text, message = TEXTGRID_CASES[case]
    path = tmp_path / "story.TextGrid"
    path.write_text(text)
    with pytest.raises(BrainshapeError, match=exactly(message.format(p=path))):
        stimuli.read_textgrid(path)


def test_textgrid_missing_tier_lists_tiers():
    path = DATA / "long.TextGrid"
    with pytest.raises(
        BrainshapeError,
        match=exactly(
            f"{path} has no tier 'word' (tiers present: 'phones', 'words'); set words.tier in the "
            "config to the tier that holds the words"
        ),
    ):
        stimuli.read_textgrid(path, tier="word")


FIX_EV = "fix the events file"
HEAD = "onset\tduration\ttrial_type\tword\n"

EVENTS_CASES = {
    "no_duration": (
        "onset\ttrial_type\tword\n1\tword\tone\n",
        "{p} lacks the column(s) duration (columns present: onset, trial_type, word); a word "
        "events file needs onset, duration and word, or set the word column to the one that "
        "holds the words",
    ),
    "nan_onset": (
        HEAD + "1\t0.5\tword\tone\nn/a\t0.5\tword\ttwo\n",
        f"{{p}}: word 1 ('two') has no valid time (onset nan, offset nan); {FIX_EV}",
    ),
    "negative_duration": (
        HEAD + "1\t-0.5\tword\tone\n",
        f"{{p}}: word 0 ('one') ends at 0.5 s, before it starts at 1 s; {FIX_EV}",
    ),
    "backwards": (
        HEAD + "2\t0.5\tword\tone\n1\t0.5\tword\ttwo\n",
        "{p}: word 1 ('two') starts at 1 s, before word 0 ('one') at 2 s; words must be in "
        f"time order, {FIX_EV}",
    ),
    "no_word_rows": (
        HEAD + "1\t0.5\tnoise\tn/a\n2\t0.5\tsilence\tn/a\n",
        "{p} holds no words: no row has trial_type 'word' (trial types present: noise, "
        "silence); set the word trial_type to the one that marks words",
    ),
    "empty_word": (
        HEAD + "1\t0.5\tword\tn/a\n",
        f"{{p}}: word 0 (onset 1) has no text in column 'word'; {FIX_EV}",
    ),
    "header_only": (HEAD, f"{{p}} holds no words; {FIX_EV}"),
}


@pytest.mark.parametrize("case", EVENTS_CASES)
def test_malformed_events(tmp_path, case):
    text, message = EVENTS_CASES[case]
    path = tmp_path / "events.tsv"
    path.write_text(text)
    with pytest.raises(BrainshapeError, match=exactly(message.format(p=path))):
        stimuli.read_events(path)


def test_unparseable_events(tmp_path):
    path = tmp_path / "events.tsv"
    path.write_text(HEAD + "1\t0.5\tword\tone\textra\n")
    message = (
        f"{path} is not a readable tab-separated events file (line 2 has 5 cells, the header "
        "4); fix the events file"
    )
    with pytest.raises(BrainshapeError, match=exactly(message)):
        stimuli.read_events(path)
    path.write_text("\n\n")
    with pytest.raises(BrainshapeError, match="events file \\(it is empty\\)"):
        stimuli.read_events(path)


# --- the packaged stories ------------------------------------------------------------------------


def test_packaged_stories():
    paths = sorted(STORIES.glob("*.txt"))
    assert [p.stem for p in paths] == ["ferry", "glacier", "lighthouse", "orchard"]
    for path in paths:
        words = stimuli.story_words(path)
        # About 8 minutes of speech: ~240 volumes per run at TR 2 s, enough TRs for ridge on
        # SmolLM2's 576 x 4 delayed features to find a planted layer.
        assert 950 <= len(words) <= 1200, path.name
        text = path.read_text(encoding="utf-8")
        assert "\n\n" not in text and text.endswith("\n")  # one paragraph per line
        # Things tokenizers split: contractions, hyphens, numbers, quotes, questions.
        assert any("'" in w for w in words), path.name
        assert any("-" in w for w in words), path.name
        assert any('"' in w for w in words), path.name
        assert any(w.endswith("?") or w.endswith('?"') for w in words), path.name
    assert sum(any(ch.isdigit() for ch in w) for p in paths for w in stimuli.story_words(p)) >= 4


# --- published datasets: tiers by position, non-speech labels, annotations ----------------------

LEBEL_WORDS = [
    (0.0, 0.4, ""),
    (0.4, 0.5, "sentence_start"),
    (0.5, 0.8, "so"),
    (0.8, 0.9, "sp"),
    (0.9, 1.3, "{BR}"),
    (1.3, 1.6, "Spoke"),
    (1.6, 1.7, "{LG}"),
    (1.7, 2.0, "SP"),
    (2.0, 2.4, "she"),
    (2.4, 2.5, "{ns}"),
    (2.5, 2.6, "ls"),
    (2.6, 2.7, "Sentence_End"),
    (2.7, 3.0, "lg"),
]


def _lebel_grid(path, short: bool) -> None:
    phones = [(0.0, 1.5, "S"), (1.5, 3.0, "OW1")]
    stimuli.write_textgrid_tiers(path, [("phone", phones), ("word", LEBEL_WORDS)], 3.0, short=short)


@pytest.mark.parametrize("short", [False, True])
def test_textgrid_tier_by_position_drops_every_marker(tmp_path, short):
    path = tmp_path / "story.TextGrid"
    _lebel_grid(path, short)
    expected = pd.DataFrame(
        {"word": ["so", "Spoke", "she"], "onset": [0.5, 1.3, 2.0], "offset": [0.8, 1.6, 2.4]}
    ).assign(aligned=True)
    for tier in ("2", 2, "word"):
        assert_table(stimuli.read_textgrid(path, tier=tier), expected)
        assert_table(stimuli.read_words(path, "textgrid", tier=tier), expected)
    assert stimuli.read_textgrid(path, tier="1")["word"].tolist() == ["S", "OW1"]
    # A list of one's own replaces the default: here only sp and br are markers.
    own = stimuli.read_words(path, "textgrid", tier="2", nonspeech=["sp", "br"])
    assert own["word"].tolist() == ["sentence_start", "so", "Spoke", "{LG}", "she", "{ns}", "ls",
                                    "Sentence_End", "lg"]  # fmt: skip
    with pytest.raises(
        BrainshapeError,
        match=exactly(
            f"{path} has no tier at position 3 (tiers present: 1 'phone', 2 'word'); tier "
            "positions count from 1: set words.tier (or the runs sheet's tier column) to the "
            "position or name of the tier that holds the words"
        ),
    ):
        stimuli.read_textgrid(path, tier="3")


def test_long_and_short_textgrids_of_one_dataset_read_alike(tmp_path):
    _lebel_grid(tmp_path / "long.TextGrid", short=False)
    _lebel_grid(tmp_path / "short.TextGrid", short=True)
    assert "item [" in (tmp_path / "long.TextGrid").read_text()
    assert "item [" not in (tmp_path / "short.TextGrid").read_text()
    table = stimuli.words_table(
        {"a": tmp_path / "long.TextGrid", "b": tmp_path / "short.TextGrid"}, "textgrid", tier="2"
    )
    a, b = (table[table.story == s].drop(columns="story") for s in "ab")
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_nonspeech_labels_compare_lower_cased_without_braces():
    labels = ["{BR}", "Br", " sp ", "SENTENCE_START", "", "{SL}", "<SIL>", "brr", "spoke", "{X}"]
    expected = [True, True, True, True, True, True, True, False, False, False]
    assert stimuli.is_nonspeech(labels).tolist() == expected
    assert stimuli.is_nonspeech(["{X}", "x", "br"], ["x"]).tolist() == [True, True, False]
    with pytest.raises(BrainshapeError, match="must be a list of labels, got the string 'sp'"):
        stimuli.is_nonspeech(["sp"], "sp")


def test_events_and_gentle_drop_nonspeech_through_read_words(tmp_path):
    path = tmp_path / "events.tsv"
    path.write_text("onset\tduration\tword\n1\t0.5\tsp\n2\t0.25\thello\n3\t0.5\t{NS}\n")
    assert stimuli.read_words(path, "events")["word"].tolist() == ["hello"]
    path.write_text("onset\tduration\tword\n1\t0.5\tsp\n")
    with pytest.raises(
        BrainshapeError,
        match=exactly(
            f"{path} holds no words: every label is non-speech (words.nonspeech lists <sil>, "
            "<unk>, [noise], br, cg, ig, lg, ls, ns, ns_ap, sentence start, sentence_end, "
            "sentence_start, sil, sl, sp); check the file, the tier and words.nonspeech"
        ),
    ):
        stimuli.read_words(path, "events")


ANNOTATIONS = (
    "Words\tSegment\tWord Onset\tWord Offset\n"
    "Alice\t1\t20.1\t20.5\n"
    "was\t1\t20.5\t20.7\n"
    "n't\t1\t\t\n"
    "tired\t1\t21.1\t21.5\n"
    "'s\t1\tn/a\tn/a\n"
)


def test_annotations_interpolate_untimed_clitics(tmp_path):
    path = tmp_path / "annotations.tsv"
    path.write_text(ANNOTATIONS)
    expected = pd.DataFrame(
        {
            "word": ["Alice", "was", "n't", "tired", "'s"],
            # n't sits half-way (by position) between was and tired; 's, after the last timed
            # word, takes its times.
            "onset": [20.1, 20.5, 20.8, 21.1, 21.1],
            "offset": [20.5, 20.7, 21.1, 21.5, 21.5],
            "aligned": [True, True, False, True, False],
        }
    )
    assert_table(stimuli.read_annotations(path), expected)
    assert_table(stimuli.read_words(path, "annotations"), expected)
    copy = tmp_path / "copy.tsv"
    stimuli.write_annotations(stimuli.read_annotations(path), copy)
    back = stimuli.read_annotations(copy)
    assert back["aligned"].tolist() == expected["aligned"].tolist()
    assert_table(back, expected)


def test_bad_annotations(tmp_path):
    path = tmp_path / "annotations.tsv"
    path.write_text(ANNOTATIONS.replace("21.1\t21.5", "soon\t21.5"))
    with pytest.raises(
        BrainshapeError,
        match=exactly(
            f"{path}: word 3 ('tired') has Word Onset 'soon', not a number of seconds (leave the "
            "cell empty or n/a for an untimed word); fix the annotations file"
        ),
    ):
        stimuli.read_annotations(path)
    path.write_text("Words\tOnset\tWord Offset\nAlice\t1\t2\n")
    with pytest.raises(
        BrainshapeError,
        match=exactly(
            f"{path} lacks the column(s) Word Onset (columns present: Words, Onset, Word Offset); "
            "an annotations file needs Words, Word Onset, Word Offset"
        ),
    ):
        stimuli.read_annotations(path)
    path.write_text("Words\tWord Onset\tWord Offset\nAlice\t\t\n")
    with pytest.raises(
        BrainshapeError,
        match=exactly(
            f"{path}: none of its 1 words has both an onset and an offset; fix the annotations file"
        ),
    ):
        stimuli.read_annotations(path)


def test_textgrid_writer_refuses_gaps(tmp_path):
    path = tmp_path / "gap.TextGrid"
    with pytest.raises(BrainshapeError, match="the intervals of tier 'word' do not tile 0-2 s"):
        stimuli.write_textgrid_tiers(path, [("word", [(0.0, 1.0, "a"), (1.5, 2.0, "b")])], 2.0)
    assert not path.exists()


def test_word_times_are_midpoints_in_word_index_order_and_checked():
    table = stimuli.stack_words({"b": FIXTURE, "a": FIXTURE.iloc[:2]})
    assert table["story"].tolist() == ["b"] * 4 + ["a"] * 2
    assert table["word_index"].tolist() == [0, 1, 2, 3, 0, 1]
    shuffled = table.sample(frac=1.0, random_state=0)  # row order does not matter
    times = stimuli.word_times(shuffled)
    np.testing.assert_allclose(times["b"], [0.65, 1.1, 1.35, 2.5])
    np.testing.assert_allclose(times["a"], [0.65, 1.1])
    with pytest.raises(BrainshapeError, match=r"lacks column\(s\) \['offset'\]"):
        stimuli.word_times(table.drop(columns="offset"))
    gap = table[table["word_index"] != 1]
    with pytest.raises(BrainshapeError, match=r"story 'b': word_index must run 0, 1, \.\.\."):
        stimuli.word_times(gap)
    nan = table.copy()
    nan.loc[2, "onset"] = np.nan
    with pytest.raises(BrainshapeError, match=r"story 'b': onset or offset has NaN"):
        stimuli.word_times(nan)


def test_the_words_table_round_trips_and_a_foreign_table_is_named(tmp_path):
    table = stimuli.stack_words(
        {"a": pd.DataFrame({"word": ["one", "two"], "onset": [0.0, 1.0], "offset": [0.5, 1.5]})}
    )
    path = tmp_path / "words.parquet"
    stimuli.write_words_table(path, table)
    pd.testing.assert_frame_equal(stimuli.read_words_table(path), table)
    table.drop(columns=["aligned", "onset"]).to_parquet(path)
    with pytest.raises(BrainshapeError) as err:
        stimuli.read_words_table(path)
    assert str(err.value) == (
        f"{path}: not a words table (no column(s) onset, aligned); delete it and rerun rule words"
    )


# --- the published files as they really are -----------------------------------------------------

REAL_ALICE = DATA / "ds002322_annotations.tsv"  # ds002322 code/annotations.tsv (SOURCE there)


def test_markers_of_every_copy_of_the_reference_code_are_dropped(tmp_path):
    """sentence_start ... sp (deep-fMRI-dataset), sl, cg, ig (encoding-model-scaling-laws),
    ns_ap, 'sentence start', half-parenthesised typos, and re-alignments' [noise] and <unk>."""
    markers = ["{SL}", "sl", "{IG}", "cg", "{CG}", "NS_AP", "{ns_ap}", "sentence start",
               "{LS)", "(BR}", "(br", "[noise]", "[NOISE]", "<unk>", "<UNK>"]  # fmt: skip
    words = ["so", "slow", "cog", "igloo", "noise", "unk", "br-", "sentence"]
    assert stimuli.is_nonspeech(markers).all()
    assert not stimuli.is_nonspeech(words).any()
    intervals, t = [], 0.0
    for label in [w for pair in zip(words, markers, strict=False) for w in pair]:
        intervals.append((t, t + 0.5, label))
        t += 0.5
    path = tmp_path / "story.TextGrid"
    stimuli.write_textgrid_tiers(path, [("phone", intervals), ("word", intervals)], t)
    assert stimuli.read_words(path, "textgrid", tier="2")["word"].tolist() == words


def _tiers():
    phones = [(0.0, 0.5, ""), (0.5, 0.65, "S"), (0.65, 0.8, "OW1"), (0.8, 1.3, "SH"),
              (1.3, 1.6, "IY1"), (1.6, 2.0, "")]  # fmt: skip
    words = [(0.0, 0.5, "sp"), (0.5, 0.8, "so"), (0.8, 1.6, "she"), (1.6, 2.0, "{BR}")]
    return [("phone", phones), ("word", words)]


SO_SHE = pd.DataFrame({"word": ["so", "she"], "onset": [0.5, 0.8], "offset": [0.8, 1.6]}).assign(
    aligned=True
)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("form", ["long", "short", "chronological"])
def test_every_praat_text_format_and_encoding_reads_alike(tmp_path, form, encoding):
    """Praat writes the long, short and chronological text formats, in ASCII/UTF-8 or, when a
    label needs it, UTF-16 with a byte-order mark; files edited elsewhere gain a UTF-8 one."""
    path = tmp_path / "story.TextGrid"
    stimuli.write_textgrid_tiers(
        path, _tiers(), 2.0, short=form == "short", chronological=form == "chronological"
    )
    text = path.read_text()
    assert text.startswith('"Praat chronological') == (form == "chronological")
    bom = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}.get(encoding, b"")
    path.write_bytes(bom + text.encode(encoding))
    assert_table(stimuli.read_textgrid(path, tier="2"), SO_SHE)
    tiers = stimuli.textgrid_tiers(path)
    assert [(t.name, t.kind, t.items) for t in tiers] == [
        (name, "IntervalTier", items) for name, items in _tiers()
    ]


def test_chronological_format_as_praat_writes_it(tmp_path):
    """Items of all tiers interleaved in time order, a TextTier's points with one time,
    `! name:` comments, CRLF line ends, a quote inside a label."""
    path = tmp_path / "story.TextGrid"
    lines = [
        '"Praat chronological TextGrid text file"',
        "0 2   ! Time domain.",
        "3   ! Number of tiers.",
        '"IntervalTier" "phone" 0 2',
        '"IntervalTier" "word" 0 2',
        '"TextTier" "notes" 0 2',
        "",
        "! phone:", "1 0 0.5", '""',
        "! word:", "2 0 0.5", '"sp"',
        "! notes:", "3 0.25", '"a ""cough"""',
        "! phone:", "1 0.5 2", '"SOW"',
        "! word:", "2 0.5 0.8", '"so"',
        "! word:", "2 0.8 1.6", '"she"',
        "! word:", "2 1.6 2", '""',
    ]  # fmt: skip
    path.write_bytes("\r\n".join(lines).encode())
    assert_table(stimuli.read_textgrid(path, tier="word"), SO_SHE)
    notes = stimuli.textgrid_tiers(path)[2]
    assert (notes.kind, notes.items) == ("TextTier", [(0.25, 0.25, 'a "cough"')])
    path.write_text("\n".join(lines).replace("2 0.8 1.6", "4 0.8 1.6"))
    with pytest.raises(
        BrainshapeError,
        match=exactly(
            f"{path} is not a valid TextGrid: an item names tier 4, but the file has 3; {FIX_TG}"
        ),
    ):
        stimuli.read_textgrid(path, tier="word")


def _long_grid(phone_lines: list[str]) -> str:
    """A long-format TextGrid whose phone tier is ``phone_lines`` (after its item line) and
    whose word tier holds so and she."""
    head = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0 ",
            "xmax = 2 ", "tiers? <exists> ", "size = 2 ", "item []: ", "    item [1]:"]  # fmt: skip
    words = [
        "    item [2]:",
        '        class = "IntervalTier" ',
        '        name = "word" ',
        "        xmin = 0 ",
        "        xmax = 2 ",
        "        intervals: size = 2 ",
        "        intervals [1]:",
        "            xmin = 0.5 ",
        "            xmax = 0.8 ",
        '            text = "so" ',
        "        intervals [2]:",
        "            xmin = 0.8 ",
        "            xmax = 1.6 ",
        '            text = "she" ',
    ]
    return "\n".join(head + phone_lines + words) + "\n"


def _phone_tier(size: int, intervals: list[tuple[float, float, str]]) -> list[str]:
    lines = ['        class = "IntervalTier" ', '        name = "phone" ', "        xmin = 0 ",
             "        xmax = 2 ", f"        intervals: size = {size} "]  # fmt: skip
    for k, (a, b, label) in enumerate(intervals, 1):
        lines += [f"        intervals [{k}]:", f"            xmin = {a} ",
                  f"            xmax = {b} ", f'            text = "{label}" ']  # fmt: skip
    return lines


def test_a_tier_that_is_not_read_never_stops_the_words_tier(tmp_path):
    """wheretheressmoke's phone tier has overlapping intervals; other copies have a miscounted
    or garbled phone tier. The words tier is read all the same; the broken tier only when it
    is the one asked for."""
    overlapping = [(0.0, 0.6, "S"), (0.5, 0.9, "OW1"), (0.8, 0.7, "SH"), (0.7, 2.0, "IY1")]
    path = tmp_path / "story.TextGrid"
    path.write_text(_long_grid(_phone_tier(4, overlapping)))
    assert_table(stimuli.read_textgrid(path, tier="2"), SO_SHE)
    assert stimuli.textgrid_tiers(path)[0].items == overlapping  # read, not judged
    broken = {
        "miscounted": (
            _phone_tier(3, overlapping),
            "tier 1 ('phone') holds more than the 3 items it declares",
        ),
        "unquoted": (
            _phone_tier(4, overlapping)[:-1] + ["            text = S"],
            "it ends where the text of item 4 of tier 1 ('phone') was expected",
        ),
        "garbled": (
            _phone_tier(4, overlapping)[:-2] + ["            xmax = ?2 "],
            "unexpected '?2' on line 29",
        ),
    }
    for phone_lines, why in broken.values():
        path.write_text(_long_grid(phone_lines))
        assert_table(stimuli.read_textgrid(path, tier="word"), SO_SHE)
        phone = stimuli.textgrid_tiers(path)[0]
        assert (phone.name, phone.kind, phone.items) == ("phone", "", [])
        assert phone.error == f"{path} is not a valid TextGrid: {why}; {FIX_TG}"
        with pytest.raises(BrainshapeError, match=exactly(phone.error)):
            stimuli.read_textgrid(path, tier="phone")
    path.write_text(_long_grid(_phone_tier(4, overlapping)).replace("size = 2 ", "size = 3 ", 1))
    with pytest.raises(
        BrainshapeError,
        match=exactly(f"{path} is not a valid TextGrid: it declares 3 tiers but holds 2; {FIX_TG}"),
    ):
        stimuli.read_textgrid(path, tier="word")


def test_binary_and_undecodable_textgrids_are_named(tmp_path):
    path = tmp_path / "story.TextGrid"
    path.write_bytes(b"ooBinaryFile\x08TextGrid\x00\x01")
    with pytest.raises(
        BrainshapeError, match=exactly(f"{path} is a binary TextGrid, which is not read; {FIX_TG}")
    ):
        stimuli.read_textgrid(path)
    path.write_bytes(b'File type = "ooTextFile"\n\xe9\xff\n')
    with pytest.raises(
        BrainshapeError,
        match=exactly(
            f"{path} is not a valid TextGrid: it is neither UTF-8 nor UTF-16 text; {FIX_TG}"
        ),
    ):
        stimuli.read_textgrid(path)


def test_alice_word_whose_offset_precedes_its_onset(caplog):
    """The real code/annotations.tsv: data row 102, 'suddenly', 53.1846 -> 52.4036 s (its offset
    a copy of the onset before). It keeps its onset, ends where 'a' starts, is marked not
    aligned, and the repair is logged; the rest of the file reads as published."""
    raw = pd.read_csv(REAL_ALICE, sep="\t", dtype=str, keep_default_na=False)
    assert raw.loc[102, ["Words", "Word Onset", "Word Offset"]].tolist() == [
        "suddenly",
        "53.184579",
        "52.40363506",
    ]
    with caplog.at_level("WARNING", logger="brainshape.stimuli"):
        table = stimuli.read_words(REAL_ALICE, "annotations")
    assert len(table) == len(raw) == 2132
    row = table.loc[102]
    assert (row.word, row.onset, row.offset, row.aligned) == ("suddenly", 53.184579, 54.18076273,
                                                              False)  # fmt: skip
    assert table.loc[101:103, "word"].tolist() == ["when", "suddenly", "a"]
    assert table.loc[103, "onset"] == 54.18076273 and table.loc[103, "aligned"]
    untimed = (raw["Word Onset"].str.strip() == "").to_numpy()
    assert untimed.sum() == 31  # the clitics ('s, n't, ’d, ...)
    assert (~table["aligned"]).sum() == 32  # the clitics and suddenly
    assert (table["aligned"].to_numpy() == ~untimed & (np.arange(len(raw)) != 102)).all()
    assert table["word"].tolist() == raw["Words"].str.strip().tolist()
    timed = ~untimed & (np.arange(len(raw)) != 102)
    np.testing.assert_array_equal(table.onset[timed], raw["Word Onset"][timed].astype(float))
    np.testing.assert_array_equal(table.offset[timed], raw["Word Offset"][timed].astype(float))
    assert [r.getMessage() for r in caplog.records] == [
        f"{REAL_ALICE}: word 102 ('suddenly') ends at 52.4036 s, before it starts at 53.1846 s; "
        "it keeps its onset and ends at 54.1808 s, where the next word starts; marked not "
        "aligned in the words table"
    ]


def test_backwards_word_that_does_not_fit_its_neighbours_is_interpolated(tmp_path, caplog):
    path = tmp_path / "annotations.tsv"
    path.write_text(
        "Words\tWord Onset\tWord Offset\nso\t1.0\t1.5\nshe\t9.0\t1.6\nleft\t2.0\t2.5\nfast\t3\t2\n"
    )
    with caplog.at_level("WARNING", logger="brainshape.stimuli"):
        table = stimuli.read_annotations(path)
    expected = pd.DataFrame(
        {
            "word": ["so", "she", "left", "fast"],
            # she (onset 9 after left's 2) becomes untimed: half-way between so and left; fast,
            # the last word, keeps its onset and ends there.
            "onset": [1.0, 1.5, 2.0, 3.0],
            "offset": [1.5, 2.0, 2.5, 3.0],
            "aligned": [True, False, True, False],
        }
    )
    assert_table(table, expected)
    assert len(caplog.records) == 2
    assert "its onset does not fit between its neighbours" in caplog.records[0].getMessage()
    assert "ends at 3 s, its onset (the last word)" in caplog.records[1].getMessage()
