"""The verifiable reward (workbook/eval/reward.py), on real poems of the corpus: the real 绝句 score
high; random line endings, shuffled characters, broken lengths and repeated characters score low."""
import gzip
import json
import random

import pytest

from tests.helpers import ROOT
from workbook.eval import reward as R
from workbook.eval.forms import clauses, shi_form, split_title_line


@pytest.fixture(scope="module")
def jueju():
    """The clauses of the first 2,000 五言绝句 of the training corpus."""
    out = []
    with gzip.open(ROOT / "data" / "pretrain_poetry_train.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            _, body = split_title_line(json.loads(line)["text"])
            if shi_form(body) == "五言绝句":
                out.append(clauses(body))
                if len(out) == 2000:
                    break
    return out


def test_readings_name_the_rhyme_group_and_tone():
    assert R.reading("诗") == ("支", 1)  # shi: the apical i, not 齐
    assert R.reading("衣")[0] == "齐" and R.reading("绿")[0] == "齐"  # yi, lü
    assert R.reading("月")[0] == "皆" and R.reading("光")[0] == "唐" and R.reading("霜")[0] == "唐"
    assert R.level("天") == "平" and R.level("明") == "平" and R.level("地") == "仄" and R.level("好") == "仄"


def test_real_quatrains_rhyme_and_random_endings_do_not(jueju):
    real = sum(R.rhyme_score(lines) == 1.0 for lines in jueju) / len(jueju)
    rng = random.Random(0)
    mixed = [[a[0], a[1], b[2], b[3]] for a, b in ((rng.choice(jueju), rng.choice(jueju)) for _ in jueju)]
    random_pairs = sum(R.rhyme_score(lines) == 1.0 for lines in mixed) / len(mixed)
    assert real > 0.75 and random_pairs < 0.15, (real, random_pairs)


def test_real_quatrains_keep_the_tone_rules_and_shuffled_characters_do_not(jueju):
    real = sum(R.tone_score(lines) for lines in jueju) / len(jueju)
    rng = random.Random(0)
    shuffled = []
    for lines in jueju:
        chars = list("".join(lines))
        rng.shuffle(chars)
        text = "".join(chars)
        shuffled.append([text[i * 5:(i + 1) * 5] for i in range(4)])
    fake = sum(R.tone_score(lines) for lines in shuffled) / len(shuffled)
    assert real > 0.7 and fake < 0.6 and real - fake > 0.15, (real, fake)


def test_the_total_orders_real_poems_above_broken_ones(jueju):
    poem = "，".join(jueju[0][:2]) + "。" + "，".join(jueju[0][2:]) + "。"
    good = R.score(poem, [5, 5, 5, 5], stopped=True)
    assert good.form == 1.0 and good.stop == 1.0 and not good.repetitive
    broken = R.score(poem[:-2] + "。", [5, 5, 5, 5], stopped=True)  # last line one character short
    assert broken.form == 0.0 and broken.rhyme == 0.0 and broken.tones == 0.0 and broken.total == 0.5
    unstopped = R.score(poem, [5, 5, 5, 5], stopped=False)
    assert unstopped.total == pytest.approx(good.total - 0.5)
    wrong_form = R.score(poem, [7, 7, 7, 7], stopped=True)
    assert wrong_form.form == 0.0 and wrong_form.rhyme == 0.0


def test_degenerate_text_collects_no_rhyme_or_tones():
    # every line ends on the same character: a perfect rhyme, and a reward hack the guard stops
    same = R.score("花花花花花，花花花花花。花花花花花，花花花花花。", [5, 5, 5, 5], stopped=True)
    assert same.repetitive and same.rhyme == 0.0 and same.tones == 0.0 and same.total == 1.5
    twice = R.score("床前明月光，疑是地上霜。床前明月光，疑是地上霜。", [5, 5, 5, 5], stopped=True)
    assert twice.repetitive and twice.rhyme == 0.0
    real = R.score("床前明月光，疑是地上霜。举头望明月，低头思故乡。", [5, 5, 5, 5], stopped=True)
    assert not real.repetitive and real.rhyme == 1.0 and real.total > same.total


def test_a_repeated_rhyme_character_does_not_rhyme():
    # 云 … 云 … 中: the second 云 rhymes with nothing but itself (不重韵); the hackable rule paid for it
    poem = "云光连海月，风暖入山云。水色连山影，山光入海云。不知何处见，应向白云中。"
    strict = R.score(poem, [5, 5, 5, 5, 5, 5], stopped=True)
    loose = R.score(poem, [5, 5, 5, 5, 5, 5], stopped=True, distinct_rhymes=False)
    assert strict.rhyme == pytest.approx(1 / 3) and loose.rhyme == pytest.approx(2 / 3)
    assert not strict.repetitive  # no run of three, no line twice: only the rhyme rule sees it
    real = R.score("床前明月光，疑是地上霜。举头望明月，低头思故乡。", [5, 5, 5, 5], stopped=True)
    assert real.rhyme == 1.0  # two different rhyme characters in one group
    # repeated_end marks the hole, whichever rule scored it, only when the form is right
    assert strict.repeated_end and loose.repeated_end and not real.repeated_end
    assert not R.score(poem, [7, 7, 7, 7], stopped=True).repeated_end
    odd = R.score("云光连海月，风暖入山云。云色连山影，山光入海月。", [5, 5, 5, 5], stopped=True)
    assert not odd.repeated_end  # an odd line's end repeating an even one's is not the hole


def test_a_title_line_is_not_part_of_the_poem():
    with_title = R.score("《静夜思》李白\n床前明月光，疑是地上霜。举头望明月，低头思故乡。", [5, 5, 5, 5], True)
    assert with_title.form == 1.0 and with_title.rhyme == 1.0
