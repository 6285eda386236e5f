"""plumbing/formats.py: public data read as it comes: gzipped JSONL and .json arrays read like JSONL and
name the bad line; an empty answer is kept; an HH pair that differs before its last assistant
turn is adapted, or skipped where there is nothing to compare; each reader's one printed line
counts what it used and skipped; a file of mostly unusable records stops; prompts and pretraining
text are read from text files or records of any format."""

import gzip
import json

import pytest

from plumbing.formats import DataError, Skip, demonstrations, read_prompts, read_records, read_texts, split_hh

H, A = "\n\nHuman:", "\n\nAssistant:"  # Anthropic HH's turn markers


def write(path, lines):
    """One JSON record (or a raw string) a line -> the path as a string."""
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return str(path)


def hh(chosen_turns, rejected_turns):
    """An HH record from two lists of alternating (human, assistant, human, ...) turns."""
    def dialogue(turns):
        return "".join(f"{H if i % 2 == 0 else A} {t}" for i, t in enumerate(turns))
    return {"chosen": dialogue(chosen_turns), "rejected": dialogue(rejected_turns)}


DEMOS = [{"prompt": "What is 2 + 3?", "response": "5"}, {"prompt": "Spell cat backwards.", "response": "tac"},
         {"instruction": "Add.", "input": "2 and 3", "output": "5"}]
DEMOS_READ = [{"prompt": "What is 2 + 3?", "response": "5"}, {"prompt": "Spell cat backwards.", "response": "tac"},
              {"prompt": "Add.\n\n2 and 3", "response": "5"}]


# ---- files: gzip and .json arrays

def test_gzipped_jsonl_reads_as_plain_jsonl(tmp_path):
    plain = write(tmp_path / "d.jsonl", DEMOS)
    zipped = tmp_path / "d.jsonl.gz"
    zipped.write_bytes(gzip.compress((tmp_path / "d.jsonl").read_bytes()))
    assert read_records(str(zipped)) == read_records(plain) == ("sft", DEMOS_READ)
    bad = tmp_path / "bad.jsonl.gz"  # a gzip stream cut short: one line, no traceback
    bad.write_bytes(gzip.compress((tmp_path / "d.jsonl").read_bytes() * 50)[:-20])
    with pytest.raises(DataError, match=f"^{bad}:\\d+: cannot be decompressed"):
        read_records(str(bad))


def test_json_array_reads_and_names_the_line(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(DEMOS, indent=2))  # as alpaca_data.json ships: one record over several lines
    assert read_records(str(path)) == ("sft", DEMOS_READ)
    # malformed JSON: the line of the error, not the record's first line
    path.write_text('[\n  {"prompt": "a", "response": "b"},\n  {"prompt": "c",\n   "response": oops}\n]\n')
    with pytest.raises(DataError, match=f"^{path}:4: not valid JSON"):
        read_records(str(path))
    # a well-formed record that is not a demonstration: the line where the record starts
    path.write_text('[\n  {"prompt": "a",\n   "response": "b"},\n  {"prompt": "c",\n   "response": 3},\n'
                    '  {"prompt": "d", "response": "e"}\n]\n')
    with pytest.raises(DataError, match=f"^{path}:4: prompt and responses must be strings"):
        read_records(str(path))
    for text, line, message in [('{"prompt": "a", "response": "b"}', 1, "one array of records"),
                                ('[\n{"prompt": "a", "response": "b"}\n{"prompt": "c"}]', 3, "expected ','"),
                                ('[\n{"prompt": "a", "response": "b"},\n', 3, "not closed")]:
        path.write_text(text)
        with pytest.raises(DataError, match=f"^{path}:{line}: .*{message}"):
            read_records(str(path))


# ---- what real data holds: empty answers, HH pairs that differ early, identical answers

def test_an_empty_answer_is_kept_and_counted(tmp_path, capsys):
    path = write(tmp_path / "d.jsonl", DEMOS + [{"prompt": "Tell me her home address again.", "response": ""}])
    kind, recs = read_records(path)
    assert kind == "sft" and recs[-1] == {"prompt": "Tell me her home address again.", "response": ""}
    assert capsys.readouterr().out == f"{path}: 4 sft records used (1 with an empty answer), 0 skipped\n"
    # HH: a chosen dialogue that ends in an empty assistant turn
    path = write(tmp_path / "h.jsonl", [{"chosen": f"{H} Where does she live?{A}",
                                         "rejected": f"{H} Where does she live?{A} At 12 Elm Street."}])
    assert read_records(path)[1] == [{"prompt": "Where does she live?", "completions": ["", "At 12 Elm Street."],
                                      "ranking": [0, 1]}]
    assert "(0 adapted, 1 with an empty answer)" in capsys.readouterr().out


def test_hh_pair_that_differs_at_an_earlier_assistant_turn_is_adapted(tmp_path, capsys):
    """The answers compared are the first assistant turn where the dialogues differ; the prompt
    is the dialogue before it; the turns after it are dropped."""
    early = hh(["Hi", "Hello.", "Where is Oslo?", "In Norway.", "Thanks!", "You're welcome."],
               ["Hi", "Hello.", "Where is Oslo?", "No idea.", "Please look it up.", "Fine: Norway."])
    assert split_hh(early["chosen"], early["rejected"]) == (
        "Human: Hi\n\nAssistant: Hello.\n\nHuman: Where is Oslo?", "In Norway.", "No idea.", True)
    first = hh(["Where is Oslo?", "In Norway.", "Thanks!", "Sure."], ["Where is Oslo?", "Nowhere.", "Hm.", "Sure."])
    usual = hh(["Hi", "Hello.", "Bye", "Goodbye."], ["Hi", "Hello.", "Bye", "Go away."])
    path = write(tmp_path / "hh.jsonl", [early, first, usual])
    kind, recs = read_records(path)
    assert kind == "comparison" and recs == [
        {"prompt": "Human: Hi\n\nAssistant: Hello.\n\nHuman: Where is Oslo?", "completions": ["In Norway.", "No idea."],
         "ranking": [0, 1]},
        {"prompt": "Where is Oslo?", "completions": ["In Norway.", "Nowhere."], "ranking": [0, 1]},  # one human turn
        {"prompt": "Human: Hi\n\nAssistant: Hello.\n\nHuman: Bye", "completions": ["Goodbye.", "Go away."],
         "ranking": [0, 1]}]
    assert capsys.readouterr().out == f"{path}: 3 comparison records used (2 adapted), 0 skipped\n"


def test_pairs_with_nothing_to_compare_are_skipped_naming_their_lines(tmp_path, capsys):
    human_first = hh(["Hi", "Hello.", "Where is Oslo?", "In Norway."], ["Hi", "Hello.", "Where is Paris?", "France."])
    identical = {"prompt": "Hi", "chosen": "Hello.", "rejected": "Hello."}
    good = [{"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": "No."} for i in range(4)]
    path = write(tmp_path / "c.jsonl", [good[0], human_first, good[1], identical, good[2], good[3]])
    kind, recs = read_records(path)
    assert kind == "comparison" and [r["prompt"] for r in recs] == [r["prompt"] for r in good]
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: 4 comparison records used (0 adapted), 2 skipped (lines 2, 4: ")
    assert "first differ in a human turn" in out and "(line 2)" in out
    assert "identical (line 4)" in out


def test_a_file_of_mostly_unusable_records_stops_at_the_first(tmp_path):
    identical = {"prompt": "Hi", "chosen": "Hello.", "rejected": "Hello."}
    good = {"prompt": "Hi", "chosen": "Hello.", "rejected": "Go away."}
    half = write(tmp_path / "half.jsonl", [good, identical, good, identical])  # as many used as skipped: read
    assert len(read_records(half)[1]) == 2
    path = write(tmp_path / "most.jsonl", [good, identical, identical])
    with pytest.raises(DataError, match=f"^{path}:2: 2 of 3 records cannot be used: the answers compared are "
                                        "identical \\(line 2\\)$"):
        read_records(path)


def test_demonstrations_are_the_best_ranked_answers():
    ranked = [{"prompt": "Hi", "completions": ["a", "b", "c"], "ranking": [2, 0, 1]},
              {"prompt": "Yo", "completions": ["good", "bad"], "ranking": [0, 1]}]
    assert demonstrations("comparison", ranked) == [{"prompt": "Hi", "response": "c"},
                                                    {"prompt": "Yo", "response": "good"}]
    assert demonstrations("sft", DEMOS_READ) == DEMOS_READ


# ---- prompts (ppo.py --prompts, chat.py --label --prompts)

def test_read_prompts_from_a_text_file(tmp_path, capsys):
    path = tmp_path / "prompts.txt"
    path.write_text("What is 2 + 3?\n\n   Spell cat backwards.  \r\nWhat is 2 + 3?\nTell me a story.")
    assert read_prompts(str(path)) == ["What is 2 + 3?", "Spell cat backwards.", "Tell me a story."]
    assert capsys.readouterr().out == f"{path}: 3 prompts used, 1 repeated prompts dropped, 0 skipped\n"


def test_read_prompts_from_records_of_each_format(tmp_path, capsys):
    records = [
        {"prompt": "Hi"},
        {"instruction": "Add.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "input": ""},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is Oslo?"},
                      {"role": "assistant", "content": "In Norway."}]},
        {"messages": [{"role": "user", "content": "What is 7 + 1?"}]},  # no answer yet: all of it
        hh(["Hi", "Hello.", "Bye", "Goodbye."], ["Hi", "Hello.", "Bye", "Go away."]),
        {"prompt": "Spell cat backwards.", "chosen": "tac", "rejected": "cat"},
        {"prompt": "Name a colour.", "completions": ["red", "7"], "ranking": [0, 1]},
        hh(["Hi", "Hello."], ["Hi", "Go away."]),  # its prompt is line 1's
    ]
    path = write(tmp_path / "p.jsonl", records)
    assert read_prompts(path) == ["Hi", "Add.\n\n2 and 3", "Say hi.", "Be brief.\n\nWhere is Oslo?", "What is 7 + 1?",
                                  "Human: Hi\n\nAssistant: Hello.\n\nHuman: Bye", "Spell cat backwards.",
                                  "Name a colour."]
    assert capsys.readouterr().out == f"{path}: 8 prompts used, 1 repeated prompts dropped, 0 skipped\n"
    many = write(tmp_path / "many.jsonl", [records[6]] * 5 + [records[7]])  # a prompt with several comparisons
    assert read_prompts(many) == ["Spell cat backwards.", "Name a colour."]  # repeats are not unusable records
    bad = write(tmp_path / "bad.jsonl", records[:2] + [{"text": "no prompt here"}])
    with pytest.raises(DataError, match=f"^{bad}:3: no prompt"):
        read_prompts(bad)
    bad = write(tmp_path / "hh_bad.jsonl", records[:1] + [{"chosen": f"{H} Hi", "rejected": f"{H} Hi{A} Hello."}])
    with pytest.raises(DataError, match=f"^{bad}:2: no .*Assistant"):
        read_prompts(bad)


# ---- pretraining text (--pretrain-data, sft.py --stage pretrain --data)

def test_read_texts_from_paragraphs_and_records(tmp_path, capsys):
    path = tmp_path / "corpus.txt"
    path.write_text("The fox ran.\nIt was fast.\n\n\nA key lay by the lake.\r\n\r\nThe end.")
    assert read_texts(str(path)) == ["The fox ran.\nIt was fast.", "A key lay by the lake.", "The end."]
    path = write(tmp_path / "corpus.jsonl", [{"text": "The fox ran."}, {"text": "  "}, {"text": "The end.", "id": 3}])
    assert read_texts(path) == ["The fox ran.", "The end."]
    assert f"{path}: 2 documents used, 1 skipped (lines 2: empty text (line 2))" in capsys.readouterr().out
    for bad_record in ({"content": "The fox ran."}, {"text": ["The fox ran."]}, '"The fox ran."'):
        bad = write(tmp_path / "bad.jsonl", [{"text": "ok"}, bad_record])
        with pytest.raises(DataError, match=f"^{bad}:2: expected a {{\"text\": \"...\"}} record"):
            read_texts(bad)


def test_split_hh_edge_cases():
    a = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Bye\n\nAssistant: Goodbye."
    with pytest.raises(Skip, match="differ in a human turn"):  # the shorter ends where both share an answer
        split_hh(a, "\n\nHuman: Hi\n\nAssistant: Hello.")
    with pytest.raises(Skip, match="before any assistant turn"):
        split_hh("\n\nHuman: Hi\n\nAssistant: A", "\n\nHuman: Ho\n\nAssistant: A")
    # a dialogue that goes on with a human turn after its last answer: the answer alone is compared
    assert split_hh("\n\nHuman: Hi\n\nAssistant: A\n\nHuman: ok?", "\n\nHuman: Hi\n\nAssistant: B") == ("Hi", "A", "B", True)
    assert split_hh(a, a.replace("Goodbye.", "Go away.")) == ("Human: Hi\n\nAssistant: Hello.\n\nHuman: Bye",
                                                             "Goodbye.", "Go away.", False)


def test_json_with_more_after_the_array_and_text_that_is_not_unicode(tmp_path, capsys):
    path = tmp_path / "two.json"
    path.write_text('[{"prompt": "a", "response": "b"}]\n[{"prompt": "c", "response": "d"}]\n')
    with pytest.raises(DataError, match=f"^{path}:2: more after the array's closing"):
        read_records(str(path))
    path = tmp_path / "surrogate.jsonl"  # valid JSON, but no UTF-8 can hold a lone surrogate half
    path.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "\\ud83d", "response": "b"}\n'
                    '{"prompt": "c", "response": "d"}\n')
    assert read_records(str(path))[1] == [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": "d"}]
    assert "1 skipped (lines 2: not valid Unicode" in capsys.readouterr().out
