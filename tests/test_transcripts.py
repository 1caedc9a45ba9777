"""The text the model reads: words.case, and a story's transcript aligned to its timed words.

Planted truth: a story written as Gentle output (its transcript carries case and punctuation)
and as a TextGrid in an aligner's capitals beside its transcript give the same words table and
the same features. Edge cases: contractions and hyphens split or merged by the aligner,
numbers spelled out, words the aligner dropped or added, a transcript of another story. With
trained weights (SmolLM2): capitals move the features further from the story's than lower
case does, and the transcript brings them back exactly.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainshape import demo, features, models, stimuli
from brainshape.errors import BrainshapeError
from brainshape.standins import aligner_word

ROOT = Path(__file__).resolve().parents[1]
DEMO_REGISTRY = ROOT / "config" / "models.demo.yaml"


def _timed(words, times=None, aligned=None) -> pd.DataFrame:
    """A timed words table: word k from k to k + 0.8 s unless ``times`` says otherwise."""
    n = len(words)
    onset = np.arange(n, dtype=float) if times is None else np.array([a for a, _ in times])
    offset = onset + 0.8 if times is None else np.array([b for _, b in times])
    return pd.DataFrame(
        {
            "word": words,
            "onset": onset,
            "offset": offset,
            "aligned": [True] * n if aligned is None else aligned,
        }
    )


def _align(timed_words, text, **kw):
    return stimuli.align_transcript(_timed(timed_words, **kw), text.split(), "story.txt")


# --- case ----------------------------------------------------------------------------------------


def test_case():
    caps = ["THE", "FERRY", "LEFT", "AT", "7"]
    mixed = ["The", "ferry", "left", "at", "7."]
    assert stimuli.apply_case(caps, "auto") == ["the", "ferry", "left", "at", "7"]
    assert stimuli.apply_case(mixed, "auto") == mixed  # any lower-case letter: left alone
    assert stimuli.apply_case(["I", "SAW", "ÉLODIE"], "auto") == ["i", "saw", "élodie"]
    assert stimuli.apply_case(["12", "--"], "auto") == ["12", "--"]  # nothing to lower
    assert stimuli.apply_case(mixed, "lower") == ["the", "ferry", "left", "at", "7."]
    assert stimuli.apply_case(caps, "as-is") == caps
    with pytest.raises(
        BrainshapeError, match="^words.case is 'upper'; choose one of: auto, as-is, lower$"
    ):
        stimuli.apply_case(caps, "upper")


# --- reading a transcript ------------------------------------------------------------------------


def test_transcript_words_carry_their_punctuation(tmp_path):
    path = tmp_path / "story.txt"
    path.write_bytes('\ufeff— "Wait," she said —\nthen, well-known... 20 cats!\n  \n'.encode())
    assert stimuli.read_transcript(path) == [
        '— "Wait,"',  # a dash opening the text joins the first word
        "she",
        "said —",  # a lone dash joins the word before, as in Gentle's transcripts
        "then,",
        "well-known...",
        "20",
        "cats!",
    ]
    path.write_text(" -- ... \n")
    with pytest.raises(BrainshapeError, match="holds no words \\(no token has a letter or digit"):
        stimuli.read_transcript(path)
    with pytest.raises(BrainshapeError, match="transcript .*missing.txt does not exist; check"):
        stimuli.read_transcript(tmp_path / "missing.txt")
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(BrainshapeError, match="is not UTF-8 text; save it as UTF-8"):
        stimuli.read_transcript(path)


# --- alignment -----------------------------------------------------------------------------------


def test_words_that_agree_take_their_times_exactly():
    timed = ["I", "DON'T", "KNOW", "WELL-KNOWN", "CAFE"]
    a = _align(timed, '"I don\'t know," well-known café.')
    assert a.table["word"].tolist() == ['"I', "don't", 'know,"', "well-known", "café."]
    np.testing.assert_array_equal(a.table["onset"], np.arange(5.0))
    np.testing.assert_array_equal(a.table["offset"], np.arange(5.0) + 0.8)
    assert a.table["aligned"].all() and a.unmatched == [] and a.extra == []


def test_words_the_aligner_split_or_merged_share_its_times():
    # don't -> DO + N'T (Alice's clitics), well-known -> WELL + KNOWN, cannot -> CAN + NOT, and
    # the other way round: "any more" against one timed ANYMORE, split by letters (3 and 4).
    timed = ["DO", "N'T", "WELL", "KNOWN", "CAN", "NOT", "ANYMORE", "GO"]
    a = _align(timed, "don't well-known cannot any more go")
    t = a.table
    assert t["word"].tolist() == ["don't", "well-known", "cannot", "any", "more", "go"]
    cut = 6 + 0.8 * 3 / 7
    np.testing.assert_allclose(t["onset"], [0, 2, 4, 6, cut, 7])
    np.testing.assert_allclose(t["offset"], [1.8, 3.8, 5.8, cut, 6.8, 7.8])
    assert t["aligned"].all() and a.unmatched == [] and a.extra == []


def test_unmatched_words_keep_a_sane_time_and_are_reported():
    # The aligner spelled 20 out (TWENTY), dropped "she" and added a filler (UH).
    timed = ["I", "SAW", "UH", "TWENTY", "CATS", "SAID", "TOM"]
    a = _align(timed, "I saw 20 cats, she said Tom.")
    t = a.table
    assert t["word"].tolist() == ["I", "saw", "20", "cats,", "she", "said", "Tom."]
    assert a.unmatched == [2, 4] and a.extra == [2, 3]
    assert t["aligned"].tolist() == [True, True, False, True, False, True, True]
    # Interpolated by position between matched neighbours: 20 between saw (1) and cats (4),
    # she between cats (4) and said (5).
    np.testing.assert_allclose(t["onset"], [0, 1, 2.5, 4, 4.5, 5, 6])
    np.testing.assert_allclose(t["offset"], [0.8, 1.8, 3.3, 4.8, 5.3, 5.8, 6.8])
    timed_table = _timed(timed)
    assert a.summary(timed_table) == (
        "5 of 7 transcript words matched the word timings; 2 not matched, times interpolated: "
        "'20' (word 2), 'she' (word 4); 2 timed words not in the transcript, left out: 'UH' "
        "(2.00 s), 'TWENTY' (3.00 s)"
    )


def test_words_at_the_edges_and_untimed_timed_words():
    # A title the aligner never heard, and a last word it missed; CATS had no time of its own
    # (interpolated by its reader): the transcript word matched to it is not aligned either.
    timed = ["I", "SAW", "CATS"]
    a = _align(timed, "Chapter One. I saw cats today.", aligned=[True, True, False])
    t = a.table
    assert a.unmatched == [0, 1, 5]
    assert t["aligned"].tolist() == [False, False, True, True, False, False]
    np.testing.assert_allclose(t["onset"], [0, 0, 0, 1, 2, 2])  # first and last word's times
    np.testing.assert_allclose(t["offset"], [0.8, 0.8, 0.8, 1.8, 2.8, 2.8])


def test_a_passage_that_differs_is_not_matched_by_chance():
    """40 words of the transcript against 40 other timed words (the aligner was given another
    text there): only words that are the same word match (a 'the' of the other text), none by
    shared letters, and the rest share the time between their matched neighbours, in order."""
    words = stimuli.story_words(demo.story_file("orchard"))[:80]
    other = stimuli.story_words(demo.story_file("glacier"))[200:240]
    timed = [aligner_word(w, "upper") for w in words[:20] + other + words[60:]]
    a = _align(timed, " ".join(words))
    matched = sorted(set(range(20, 60)) - set(a.unmatched))
    other_keys = {stimuli.match_key(w) for w in other}
    assert len(matched) < 10 and all(stimuli.match_key(words[i]) in other_keys for i in matched)
    assert set(a.unmatched) == set(range(20, 60)) - set(matched)
    t = a.table
    assert t["aligned"][:20].all() and t["aligned"][60:].all()
    assert (np.diff(t["onset"]) >= 0).all() and t["onset"][20] >= t["offset"][19] - 1e-9


def test_a_transcript_of_another_story_is_refused():
    with pytest.raises(
        BrainshapeError,
        match="^transcript story.txt does not fit the word timings of story '': only 1 of its 5 "
        "words match a timed word; check that it is this story's transcript",
    ):
        _align(["THE", "FERRY", "LEFT", "EARLY"], "The orchards bloom in May")


# --- a transcript-aligned story equals the same story as Gentle output -------------------------


def _story(n: int = 240):
    words = stimuli.story_words(demo.story_file("lighthouse"))[:n]
    return demo.word_timings(words, np.random.default_rng(3))


def _as_aligner_textgrid(table: pd.DataFrame, duration: float, path: Path) -> None:
    """ds003020's shape: a phone tier, then a word tier in capitals without punctuation, markers
    between words."""
    words, t = [], 0.0
    for k, (word, a, b) in enumerate(zip(table.word, table.onset, table.offset, strict=True)):
        if a > t:
            words.append((t, a, ["sp", "{BR}", "", "sentence_start"][k % 4]))
        words.append((a, b, aligner_word(word, "upper")))
        t = b
    words.append((t, duration, "sp"))
    phones = [(0.0, duration / 2, "AH0"), (duration / 2, duration, "")]
    stimuli.write_textgrid_tiers(path, [("phone", phones), ("word", words)], duration)


@pytest.fixture(scope="module")
def gentle_and_transcript(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("story")
    table, duration = _story()
    stimuli.write_gentle(table, tmp / "align.json")
    _as_aligner_textgrid(table, duration, tmp / "story.TextGrid")
    # The transcript as a person writes it: a line per sentence.
    text = " ".join(table.word).replace(". ", ".\n")
    (tmp / "story.txt").write_text(text + "\n")
    sources = {
        "gentle": {"path": tmp / "align.json", "format": "gentle"},
        "textgrid": {"path": tmp / "story.TextGrid", "format": "textgrid", "tier": "2"},
    }
    sources["aligned"] = {**sources["textgrid"], "transcript": tmp / "story.txt"}
    return table, stimuli.words_table(sources, case="as-is")


def test_transcript_aligned_words_equal_gentle_words(gentle_and_transcript):
    table, words = gentle_and_transcript
    gentle, aligned, caps = (
        words[words.story == s].drop(columns="story").reset_index(drop=True)
        for s in ("gentle", "aligned", "textgrid")
    )
    pd.testing.assert_frame_equal(aligned, gentle)  # words, times and aligned flags
    assert gentle["word"].tolist() == table["word"].tolist()  # the story's own text
    assert caps["word"].tolist() == [aligner_word(w, "upper") for w in table.word]
    np.testing.assert_array_equal(caps[["onset", "offset"]], gentle[["onset", "offset"]])


def test_transcript_aligned_features_equal_gentle_features(gentle_and_transcript, tmp_path):
    _, words = gentle_and_transcript
    registry = models.load_registry(DEMO_REGISTRY)
    spec = models.get_model(registry, "tiny-gpt2")
    corpus = [" ".join(words.word)]
    model, tokenizer = models.load(spec, "fp32", models.prepare(spec, tmp_path / "m", corpus))

    def states(story):
        story_words = words[words.story == story].word.tolist()
        return features.extract_words(model, tokenizer, story_words, context_tokens=64, stride=48)

    gentle, aligned = states("gentle"), states("aligned")
    assert gentle.shape[1] == len(words[words.story == "gentle"])
    np.testing.assert_array_equal(aligned, gentle)
    assert not np.allclose(states("textgrid"), gentle)  # the capitals read differently


# --- with trained weights: what capitals do to the features --------------------------------------


@pytest.fixture(scope="module")
def smollm2(smollm2_folder):
    spec = models.get_model(models.load_registry(DEMO_REGISTRY), "smollm2-135m")
    return spec, *models.load(spec, "fp32", smollm2_folder)


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean correlation, over words, of two layers' centred feature vectors."""
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).mean())


def test_capitals_move_trained_features_and_the_transcript_restores_them(
    gentle_and_transcript, smollm2
):
    spec, model, tokenizer = smollm2
    table, words = gentle_and_transcript
    caps = words[words.story == "textgrid"].word.tolist()
    texts = {
        "story": table.word.tolist(),
        "aligned": words[words.story == "aligned"].word.tolist(),
        "capitals": caps,
        "lower": stimuli.apply_case(caps, "auto"),
    }
    states = {
        name: features.extract_words(
            model, tokenizer, text, context_tokens=128, stride=96, max_context=spec.context
        )
        for name, text in texts.items()
    }
    np.testing.assert_array_equal(states["aligned"], states["story"])
    for layer in (6, 22):  # the layers the stand-in measurement plants
        lower = _similarity(states["lower"][layer], states["story"][layer])
        capitals = _similarity(states["capitals"][layer], states["story"][layer])
        assert capitals < lower < 1.0, (layer, capitals, lower)


# --- the ds003020 stand-in written as an aligner writes ------------------------------------------


def test_standin_textgrids_in_capitals_with_transcripts(tmp_path):
    from brainshape import standins

    root = tmp_path / "ds003020"
    truth = standins.generate(
        "ds003020",
        root,
        registry_path=DEMO_REGISTRY,
        model_root=tmp_path / "models",
        textgrid_words="upper",
        transcripts=True,
    )
    assert (truth["textgrid_words"], truth["transcripts"]) == ("upper", standins.TRANSCRIPTS)
    stories = (*standins.LEBEL_STORIES, standins.LEBEL_TEST)
    texts = dict(zip(stories, standins.story_pieces(), strict=False))
    for story in stories:
        grid = root / "derivative" / "TextGrids" / f"{story}.TextGrid"
        transcript = root / standins.TRANSCRIPTS.format(story=story)
        caps = stimuli.read_words(grid, "textgrid", tier="2")
        assert stimuli.apply_case(caps.word.tolist(), "auto") != caps.word.tolist()  # capitals
        assert caps.word.tolist() == [aligner_word(w, "upper") for w in texts[story]]
        source = {"path": grid, "format": "textgrid", "tier": "2", "transcript": transcript}
        read = stimuli.read_story(source, story=story)
        assert read.word.tolist() == texts[story]  # the story's text, at the aligner's times
        np.testing.assert_array_equal(read[["onset", "offset"]], caps[["onset", "offset"]])
    with pytest.raises(BrainshapeError, match="apply to the ds003020 stand-in only, not 'alice'"):
        standins.generate(
            "alice", tmp_path / "a", registry_path=DEMO_REGISTRY, model_root=tmp_path / "models",
            transcripts=True,
        )  # fmt: skip
