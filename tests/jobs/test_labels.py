"""Labels files (``pipelines.readers.labels``): class indices or class names, resolved against a model's classes;
unusable labels count as unlabelled, never as wrong. No Ray, no model: a config-like object stands in."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from pipelines.readers.labels import LabelMapper, LabelsFileError, label_for, read_labels, read_labels_file

IMAGENET_LIKE = SimpleNamespace(
    label2id={"tench, Tinca tinca": 0, "goldfish, Carassius auratus": 1, "great white shark": 2,
              "crane": 3, "crane, derrick": 4},  # two classes named crane: ambiguous, never guessed
    num_labels=5)


def write(tmp_path, text: str):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_index_column_is_found_and_blank_means_no_label(tmp_path):
    labels = read_labels_file(write(tmp_path, "file,wnid,idx\na.png,n01,3\nb.png,n02,\nc.png,n03,7\n"))
    assert (labels.label_column, labels.kind) == ("idx", "index")
    assert labels.entries == {"a.png": "3", "c.png": "7"}
    assert read_labels(labels.path) == {"a.png": 3, "c.png": 7}


def test_name_column_is_found_when_it_is_the_only_one(tmp_path):
    labels = read_labels_file(write(tmp_path, "file,label\na.png,goldfish\nb.png,tench\n"))
    assert (labels.label_column, labels.kind) == ("label", "name")
    with pytest.raises(LabelsFileError, match="not an integer"):
        read_labels(labels.path)  # the index-only reader refuses names


def test_ambiguous_columns_need_label_column(tmp_path):
    path = write(tmp_path, "file,wnid,name\na.png,n01,tench\n")
    with pytest.raises(LabelsFileError, match="--label-column"):
        read_labels_file(path)
    assert read_labels_file(path, "name").kind == "name"


def test_names_resolve_through_label2id(tmp_path):
    labels = read_labels_file(write(tmp_path, "file,label\n"
                                              "exact.png,great white shark\n"
                                              "case.png,Great_White_Shark\n"
                                              "synonym.png,goldfish\n"
                                              "full.png,\"tench, Tinca tinca\"\n"
                                              "ambiguous.png,crane\n"
                                              "unknown.png,zebra\n"
                                              "digits.png,1\n"))
    mapper = LabelMapper.for_model(labels, IMAGENET_LIKE)
    got = {name: mapper.label_for(f"sub/{name}") for name in
           ("exact.png", "case.png", "synonym.png", "full.png", "ambiguous.png", "unknown.png", "digits.png",
            "absent.png")}
    assert got == {"exact.png": 2, "case.png": 2, "synonym.png": 1, "full.png": 0, "ambiguous.png": 3,
                   "unknown.png": None, "digits.png": 1, "absent.png": None}
    # "crane" is the full name of class 3 (a full name wins over class 4's synonym)
    assert mapper.counts == {"labelled": 6, "without_label": 1, "unknown_name": 1, "out_of_range": 0}
    assert mapper.examples["unknown_name"] == ["'zebra' (sub/unknown.png)"]


def test_a_synonym_of_two_classes_is_not_guessed(tmp_path):
    config = SimpleNamespace(label2id={"crane, bird": 0, "crane, derrick": 1}, num_labels=2)
    mapper = LabelMapper.for_model(read_labels_file(write(tmp_path, "file,label\na.png,crane\n")), config)
    assert mapper.label_for("a.png") is None and mapper.counts["unknown_name"] == 1


def test_indices_outside_the_model_are_unlabelled_with_a_warning(tmp_path, caplog):
    labels = read_labels_file(write(tmp_path, "file,label_index\na.png,4\nb.png,5\nc.png,-1\n"))
    mapper = LabelMapper.for_model(labels, IMAGENET_LIKE)
    assert [mapper.label_for(n) for n in ("a.png", "b.png", "c.png")] == [4, None, None]
    with caplog.at_level(logging.WARNING, logger="pipelines.readers.labels"):
        report = mapper.report()
    assert report["counts"] == {"labelled": 1, "without_label": 0, "unknown_name": 0, "out_of_range": 2}
    assert report["examples"] == {"out_of_range": ["5 (b.png)", "-1 (c.png)"]}
    (record,) = caplog.records
    assert "2 input(s) have a class index outside 0..4" in record.getMessage()
    assert "count as unlabelled" in record.getMessage()


def test_no_warning_when_every_label_is_usable(tmp_path, caplog):
    mapper = LabelMapper.for_model(read_labels_file(write(tmp_path, "file,label\na.png,crane\n")), IMAGENET_LIKE)
    mapper.label_for("a.png")
    with caplog.at_level(logging.WARNING):
        assert mapper.report()["counts"]["labelled"] == 1
    assert not caplog.records


def test_label_for_with_a_plain_mapping():
    mapping = {"row-7": 1, "dir/a.png": 2, "b.png": 3}
    assert label_for(mapping, "x/y.parquet", "row-7") == 1  # an entry by item id first
    assert label_for(mapping, "dir/a.png") == 2 and label_for(mapping, "other/b.png") == 3
    assert label_for(None, "dir/a.png") is None and label_for(mapping, "c.png") is None


def test_a_labels_file_that_matches_no_input_is_reported(tmp_path, caplog):
    mapper = LabelMapper.for_model(read_labels_file(write(tmp_path, "file,label\nelsewhere/a.png,crane\n")),
                                   IMAGENET_LIKE)
    assert mapper.label_for("b.png") is None
    with caplog.at_level(logging.WARNING):
        assert mapper.report()["counts"]["without_label"] == 1
    assert "matches an input" in caplog.records[0].getMessage()
