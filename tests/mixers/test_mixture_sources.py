"""Sources: origins from manifests or named, shares from α_target / per-source α / sizes, and one-line errors (on the
command line: tests/cli/test_train_cli.py)."""

import pytest

from augkd.config import compose
from augkd.errors import ConfigError
from augkd.mixers import parse_source, resolve_mixture
from mixer_helpers import source_datasets


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return source_datasets(tmp_path_factory.mktemp("sources"))


def mixture(data=None, synthetic=None, sources=None, **mixer):
    values = compose("train", "default")
    values["data"].update(train=[str(p) for p in data or []], synthetic=[str(p) for p in synthetic or []],
                          sources=list(sources or []))
    values["mixer"].update(mixer)
    return resolve_mixture(values["data"], values["mixer"])


def test_data_directories_group_by_origin_and_share_by_size(datasets):
    mix = mixture([datasets["dft"], datasets["syn"], datasets["dft2"]])
    assert [(s.origin, s.rows) for s in mix.sources] == [("dft", 8), ("synthetic", 3)]
    assert mix.sources[0].paths == (str(datasets["dft"]), str(datasets["dft2"]))
    assert [s.alpha for s in mix.sources] == pytest.approx([8 / 11, 3 / 11])
    assert not mix.weighted and mix.weights(["dft", "synthetic"]) is None


def test_alpha_target_and_r_sdft(datasets):
    mix = mixture([datasets["dft"]], [datasets["syn"]], alpha_target=0.5, r_sdft=0.3)
    assert [(s.origin, s.alpha) for s in mix.sources] == [("dft", 0.5), ("synthetic", 0.5)]
    assert mix.weight_ratios == {"dft": 1.0, "synthetic": 0.3} and mix.weighted
    w = mix.weights(["dft", "synthetic", "dft", "dft"])
    assert w.tolist() == pytest.approx([1 / 0.825, 0.3 / 0.825, 1 / 0.825, 1 / 0.825])
    # --synthetic names the origin whatever the manifest says; alpha 0 keeps one source alone
    assert [s.origin for s in mixture(synthetic=[datasets["rattle"]], alpha_target=1.0).sources] == ["synthetic"]
    assert [s.alpha for s in mixture([datasets["dft"]], alpha_target=0.0).sources] == [1.0]


def test_n_sources_with_alphas_and_per_origin_ratios(datasets):
    sources = [parse_source(f"{datasets['dft']}:0.5"), parse_source(f"synthetic={datasets['syn']}:0.3"),
               {"path": [str(datasets["rattle"])], "alpha": 0.2}, parse_source(f"extra={datasets['anonymous']}:0")]
    mix = mixture(sources=sources, r_sdft=0.5, weight_ratios={"rattle": 2.0})
    assert [(s.origin, s.rows, s.alpha) for s in mix.sources] == [
        ("dft", 6, 0.5), ("synthetic", 3, 0.3), ("rattle", 4, 0.2), ("extra", 2, 0.0)]
    assert mix.weight_ratios == {"dft": 1.0, "synthetic": 0.5, "rattle": 2.0, "extra": 0.5}
    sampler = mix.sampler(batch_size=4, seed=0)
    assert sampler.sizes == [6, 3, 4, 2] and sampler.alphas == [0.5, 0.3, 0.2, 0.0]


def test_parse_source():
    assert parse_source("rattle=data/r:0.2") == {"origin": "rattle", "path": "data/r", "alpha": 0.2}
    assert parse_source("data/r") == {"path": "data/r"}
    assert parse_source("dft=C:/data") == {"origin": "dft", "path": "C:/data"}  # a ':' of the path stays
    assert parse_source("runs/a=b:0.5") == {"path": "runs/a=b", "alpha": 0.5}  # an '=' of the path stays
    with pytest.raises(ConfigError, match="names no directory"):
        parse_source("dft=")
    with pytest.raises(ConfigError, match="write ORIGIN=DIR"):
        parse_source("=data/x")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(data=["dft"], synthetic=["syn"], alpha_target=1.5), r"--alpha-target 1\.5 must be in \[0, 1\]"),
        (dict(data=["dft"], synthetic=["syn"], alpha_target=-0.1), r"must be in \[0, 1\]"),
        (dict(sources=["dft=dft:0.7", "synthetic=syn:0.7"]), "must sum to 1, got 1.4"),
        (dict(sources=["dft=dft:0.7", "synthetic=syn"]), "an alpha for every source or for none"),
        (dict(sources=["dft=dft:1.3", "synthetic=syn:-0.3"]), r"alpha 1\.3 must be in \[0, 1\]"),
        (dict(data=["dft"], synthetic=["syn"], r_sdft=0), "must be > 0, got 0"),
        (dict(data=["dft"], synthetic=["syn"], r_sdft=-1.0), "must be > 0"),
        (dict(data=["dft"], synthetic=["syn"], weight_ratios={"synthetic": -2}), "'synthetic' must be > 0"),
        (dict(data=["dft"], synthetic=["syn"], weight_ratios={"synthtic": 2}), r"names origin\(s\) \['synthtic'\]"),
        (dict(synthetic=["syn"], sources=["rattle"], r_sdft=0.3), "no source has that origin"),
        (dict(sources=["dft=empty"]), "source dft .* has no rows"),
        (dict(data=["dft"], alpha_target=0.5), "only source is dft: pass --synthetic DIR"),
        (dict(synthetic=["syn"], alpha_target=0.5), "leaves 0.5 to origin dft, but no source has it"),
        (dict(sources=["rattle=nowhere:0.2", "dft=dft:0.8"]), "source rattle: .*nowhere does not exist"),
        (dict(data=["nowhere"]), "--data: .*nowhere does not exist"),
        (dict(sources=["dft=dft", "dft=dft2"]), r"duplicate origin\(s\) \['dft'\]"),
        (dict(data=["dft"], sources=["dft=dft2"]), r"duplicate origin\(s\) \['dft'\]"),
        (dict(data=["syn"], synthetic=["syn"]), r"duplicate origin\(s\) \['synthetic'\]"),
        (dict(data=["anonymous"]), "records no origin; name it"),
        (dict(data=["dft"], synthetic=["syn"], sources=["rattle"], alpha_target=0.5), "is for two sources"),
        (dict(sources=["dft=dft:0.5", "synthetic=syn:0.5"], alpha_target=0.5), "not both"),
        (dict(), "no training data"),
        (dict(data=["dft"], epoch_length=0), "epoch_length 0 must be a whole number > 0"),
    ],
)
def test_bad_mixtures_are_one_line_config_errors(datasets, kwargs, message):
    def path(name):
        return str(datasets.get(name, datasets["dft"].parent / name))

    def source(text):
        origin, sep, rest = text.rpartition("=")
        name, colon, alpha = rest.partition(":")
        return parse_source(f"{origin}{sep}{path(name)}{colon}{alpha}")

    kwargs = dict(kwargs)
    data = [path(n) for n in kwargs.pop("data", [])]
    synthetic = [path(n) for n in kwargs.pop("synthetic", [])]
    sources = [source(t) for t in kwargs.pop("sources", [])]
    with pytest.raises(ConfigError, match=message) as error:
        mixture(data, synthetic, sources, **kwargs)
    assert "\n" not in str(error.value)


