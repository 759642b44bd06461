"""The prepared-weights cache: used when valid, rebuilt when damaged or stale, never required."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.tiny_gguf import write_tiny_gguf
from engine.errors import ModelLoadError
from engine.models import weight_cache
from engine.models.gguf_file import GGUFFile
from engine.models.loader import check_state, four_bit_linears, model_config
from engine.models.quantized import int4_matmul, quantize_rows
from engine.models.runtime import Runtime


def _logits(rt: Runtime) -> torch.Tensor:
    ids = [1, 5, 9, 14, 3, 7, 22, 4, 8, 11]
    with torch.inference_mode():
        return rt.model(torch.tensor([ids]), torch.arange(len(ids))[None], logits="all").logits[0].float()


def _entry(cache: Path) -> tuple[Path, Path]:
    (tensors,) = (cache / "weights").glob("*.safetensors")
    return tensors, tensors.with_suffix(".json")


def _spoil_tensor_data(path: Path) -> None:
    """Change the GGUF's weights while keeping its size and modification time (what the key hashes)."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 4000, len(data) - 8):
        data[i] ^= 0x55
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny-gemma3.gguf", "gemma3")


def test_a_second_load_reads_the_cache_not_the_gguf(tiny: Path, tmp_path: Path, monkeypatch):
    cache = tmp_path / "cache"
    first = Runtime.load(tiny, device="cpu", cache=cache)
    prepared: list[Path] = []
    real = weight_cache.from_gguf
    monkeypatch.setattr(
        weight_cache, "from_gguf", lambda path, *a, **k: prepared.append(path) or real(path, *a, **k)
    )
    cached = Runtime.load(tiny, device="cpu", cache=cache)
    assert prepared == []  # nothing was dequantized: the weights came from the entry
    assert torch.equal(_logits(cached), _logits(first))
    assert cached.fingerprints == first.fingerprints and cached.instruct == first.instruct
    assert cached.model.config == first.model.config


def test_a_model_rewritten_in_place_is_prepared_again(tiny: Path, tmp_path: Path):
    """Same size, same modification time (a `cp -p` over it): the change time still tells."""
    cache = tmp_path / "cache"
    first = Runtime.load(tiny, device="cpu", cache=cache)
    _spoil_tensor_data(tiny)
    again = Runtime.load(tiny, device="cpu", cache=cache)
    assert not torch.equal(_logits(again), _logits(first))
    assert torch.equal(_logits(again), _logits(Runtime.load(tiny, device="cpu")))
    assert len(list((cache / "weights").glob("*.json"))) == 1  # the old entry went


def test_a_model_with_its_own_output_head_loads_from_the_cache(tmp_path: Path):
    """Llama's output head is a separate tensor: its int8 copy is the head's, not the Linear's."""
    path = write_tiny_gguf(tmp_path / "llama.gguf", "llama")
    cache = tmp_path / "cache"
    built = Runtime.load(path, device="cpu", cache=cache)
    cached = Runtime.load(path, device="cpu", cache=cache)
    assert built.model.lm_head is not None and cached.model.head_int4 is not None
    assert torch.equal(_logits(cached), _logits(built))


def test_leftovers_of_killed_builds_and_old_entries_are_swept(tiny: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    Runtime.load(tiny, device="cpu", cache=cache)
    folder = cache / "weights"
    junk = [folder / ".abc.safetensors.partial", folder / "tmpx123", folder / "orphan.safetensors"]
    for path in junk:
        path.write_bytes(b"x" * 100)
    (folder / "gone.json").write_text(json.dumps({"format": 2, "source": "/nowhere.gguf", "stamp": []}))
    write_tiny_gguf(tiny, "gemma3", rope_base=5_000.0)  # a new version: the next load builds
    Runtime.load(tiny, device="cpu", cache=cache)
    left = sorted(p.name for p in folder.iterdir() if p.name != ".build.lock")
    assert len(left) == 2 and {Path(n).suffix for n in left} == {".json", ".safetensors"}


def test_two_processes_preparing_at_once_leave_one_entry(tiny: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    script = (
        "import sys, torch; from pathlib import Path; from engine.models.runtime import Runtime;"
        "rt = Runtime.load(sys.argv[1], device='cpu', cache=Path(sys.argv[2]));"
        "print(float(rt.model.embed.weight.float().sum()))"
    )
    root = Path(__file__).resolve().parents[1]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tiny), str(cache)], cwd=root, stdout=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outputs[0] == outputs[1]
    left = sorted(p.name for p in (cache / "weights").iterdir() if p.name != ".build.lock")
    assert len(left) == 2


def test_the_cached_model_matches_one_prepared_from_the_gguf(tiny: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    Runtime.load(tiny, device="cpu", cache=cache)
    cached = Runtime.load(tiny, device="cpu", cache=cache)
    fresh = Runtime.load(tiny, device="cpu")
    assert torch.equal(_logits(cached), _logits(fresh))
    assert cached.fingerprints == fresh.fingerprints  # stored at build; computed from the file here
    assert cached.model.head_int4 is not None and torch.equal(cached.model.head_int4, fresh.model.head_int4)


@pytest.mark.parametrize("damage", ["flip", "truncate", "sidecar", "no-sidecar", "empty"])
def test_a_damaged_entry_is_detected_and_rebuilt(tiny: Path, tmp_path: Path, damage: str):
    cache = tmp_path / "cache"
    good = _logits(Runtime.load(tiny, device="cpu", cache=cache))
    tensors, sidecar = _entry(cache)
    data = bytearray(tensors.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01  # one bit of one weight: only the checksum can tell
        tensors.write_bytes(bytes(data))
    elif damage == "truncate":
        tensors.write_bytes(bytes(data[: len(data) // 3]))
    elif damage == "sidecar":
        sidecar.write_text("{not json")
    elif damage == "no-sidecar":
        sidecar.unlink()
    else:
        tensors.write_bytes(b"")
    assert torch.equal(_logits(Runtime.load(tiny, device="cpu", cache=cache)), good)
    tensors, sidecar = _entry(cache)  # rebuilt: one valid entry again
    assert json.loads(sidecar.read_text())["size"] == tensors.stat().st_size


def test_a_replaced_model_gets_a_new_entry_and_the_old_one_goes(tiny: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    Runtime.load(tiny, device="cpu", cache=cache)
    old, _ = _entry(cache)
    write_tiny_gguf(tiny, "gemma3", rope_base=5_000.0)
    replaced = Runtime.load(tiny, device="cpu", cache=cache)
    new, _ = _entry(cache)
    assert new != old and not old.exists()
    assert torch.equal(_logits(replaced), _logits(Runtime.load(tiny, device="cpu")))


def test_an_unwritable_cache_only_costs_time(tiny: Path, tmp_path: Path):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    rt = Runtime.load(tiny, device="cpu", cache=blocked)
    assert torch.equal(_logits(rt), _logits(Runtime.load(tiny, device="cpu")))


def test_each_dtype_and_decode_weights_choice_gets_an_entry_of_its_own(tiny: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    exact = Runtime.load(tiny, device="cpu", dtype=torch.float32, cache=cache)
    plain = Runtime.load(tiny, device="cpu", cache=cache, decode_weights="bf16")
    quick = Runtime.load(tiny, device="cpu", cache=cache)
    quicker = Runtime.load(tiny, device="cpu", cache=cache, decode_weights="int4")
    assert exact.model.decode_weights == plain.model.decode_weights == "bf16"
    assert (quick.model.decode_weights, quicker.model.decode_weights) == ("int8", "int4")
    assert exact.model.dtype == torch.float32
    assert len(list((cache / "weights").glob("*.safetensors"))) == 4
    again = Runtime.load(tiny, device="cpu", cache=cache, decode_weights="int4")  # from its entry
    assert again.model.decode_weights == "int4" and torch.equal(_logits(again), _logits(quicker))
    with pytest.raises(ValueError, match="decode_weights is one of int4, int8, bf16"):
        Runtime.load(tiny, device="cpu", cache=cache, decode_weights="fp8")


def test_every_cached_tensor_is_aligned_for_the_int8_kernels(tiny: Path, tmp_path: Path):
    """A weight at an address that is not a multiple of 64 bytes crashed the int8 kernel (a general
    protection fault when verifying four drafted tokens); the entry's header is padded for it."""
    cache = tmp_path / "cache"
    Runtime.load(tiny, device="cpu", cache=cache)
    model = Runtime.load(tiny, device="cpu", cache=cache).model
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    assert {name: t.data_ptr() % 64 for name, t in tensors.items() if t.data_ptr() % 64} == {}
    tensors_file, _ = _entry(cache)
    header = int.from_bytes(tensors_file.read_bytes()[:8], "little")
    assert (8 + header) % 64 == 0


def test_cached_weights_are_views_of_the_mapped_file(tiny: Path, tmp_path: Path):
    """Loading copies nothing: the weights stay in the file's pages until the model reads them (what keeps
    the engine's resident memory down; safetensors' own loader read 177 MB of the default model's). Only
    a tensor at an offset that is not a multiple of 64 bytes is copied (the tiny model has odd sizes)."""
    cache = tmp_path / "cache"
    Runtime.load(tiny, device="cpu", cache=cache)
    model = Runtime.load(tiny, device="cpu", cache=cache).model
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    tensors_file, _ = _entry(cache)
    data = tensors_file.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    aligned = [n for n, e in header.items() if n != "__metadata__" and e["data_offsets"][0] % 64 == 0]
    maps = [line.split() for line in Path("/proc/self/maps").read_text().splitlines()]
    spans = [[int(x, 16) for x in m[0].split("-")] for m in maps if m[-1] == str(tensors_file)]
    assert len(aligned) > 3
    for name in aligned:
        assert any(start <= tensors[name].data_ptr() < end for start, end in spans), name


def _safetensors(path: Path, header: object, data: bytes = b"") -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return path


@pytest.mark.parametrize(
    "header, data",
    [
        ([1, 2], b""),  # not a table
        ({"w": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}}, bytes(16)),  # unknown dtype
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, bytes(8)),  # size != shape
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)),  # past the end
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, bytes(8)),  # before the data
        ({"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}}, bytes(8)),  # not a shape
        ({"w": {"dtype": "U8", "shape": ["x", 2**62], "data_offsets": [0, 0]}}, b""),  # a string to multiply
        ({"w": {"dtype": "U8", "shape": [True, 8], "data_offsets": [0, 8]}}, bytes(8)),  # a bool
        ({"w": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}}, bytes(9)),  # bytes left over
        ({"w": {"dtype": "U8", "shape": [8], "data_offsets": [1, 9]}}, bytes(9)),  # a gap before
        (  # two tensors over the same bytes
            {
                "a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                "b": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
            },
            bytes(8),
        ),
    ],
)
def test_a_hostile_entry_header_is_refused(tmp_path: Path, header: object, data: bytes):
    with pytest.raises((ValueError, KeyError)):
        weight_cache._map(_safetensors(tmp_path / "x.safetensors", header, data))


def test_a_header_longer_than_its_file_is_refused(tmp_path: Path):
    path = tmp_path / "x.safetensors"
    path.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError):
        weight_cache._map(path)
    empty = _safetensors(
        tmp_path / "y.safetensors", {"w": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}
    )
    assert weight_cache._map(empty)[0]["w"].shape == (0,)


def test_table_rows_are_read_from_the_entry_as_the_mapping_holds_them(tiny: Path, tmp_path: Path):
    """The embedding rows a cached model reads with pread (not through the mapping, which would make
    the neighbouring pages resident) are the mapped table's, in any shape; bad ids raise IndexError."""
    cache = tmp_path / "cache"
    Runtime.load(tiny, device="cpu", cache=cache)
    model = Runtime.load(tiny, device="cpu", cache=cache).model
    rows, table = model.embed_rows, model.embed.weight
    assert rows is not None
    ids = torch.tensor([[3, 0, table.shape[0] - 1], [7, 7, 1]])
    assert torch.equal(rows(ids), table[ids])
    assert rows(torch.tensor([], dtype=torch.long)).shape == (0, table.shape[1])
    for bad in (-1, table.shape[0]):
        with pytest.raises(IndexError):
            rows(torch.tensor([bad]))
    assert Runtime.load(tiny, device="cpu").model.embed_rows is None  # no cache: the table is in memory


def test_an_entry_packed_for_another_cpu_or_torch_is_not_used(tiny: Path, tmp_path: Path, monkeypatch):
    """The int4 head's packed layout depends on the CPU's vector instructions and the torch build, and a
    wrong one reads as garbage without failing a check: such an entry gets a key of its own (and is swept
    as one no load here can use)."""
    cache = tmp_path / "cache"
    Runtime.load(tiny, device="cpu", cache=cache)
    old, _ = _entry(cache)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "ANOTHER")
    Runtime.load(tiny, device="cpu", cache=cache)
    new, _ = _entry(cache)
    assert new != old and not old.exists()


def test_running_out_of_file_descriptors_does_not_cost_the_entry(tiny: Path, tmp_path: Path, monkeypatch):
    cache = tmp_path / "cache"
    good = _logits(Runtime.load(tiny, device="cpu", cache=cache))
    entry, _ = _entry(cache)
    real = os.open

    def exhausted(path, *args, **kwargs):
        if str(path).endswith(".safetensors"):
            raise OSError(errno.EMFILE, "Too many open files")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", exhausted)
    assert torch.equal(_logits(Runtime.load(tiny, device="cpu", cache=cache)), good)  # prepared again
    monkeypatch.setattr(os, "open", real)
    assert _entry(cache)[0] == entry and entry.exists()
    assert torch.equal(_logits(Runtime.load(tiny, device="cpu", cache=cache)), good)


def test_the_head_rescores_the_same_rows_read_or_mapped(tiny: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    Runtime.load(tiny, device="cpu", cache=cache)
    model = Runtime.load(tiny, device="cpu", cache=cache).model
    h = torch.randn(3, model.config.d_model, generator=torch.Generator().manual_seed(0)).to(model.dtype)
    read = model.head(h)
    model.embed_rows = None
    assert torch.equal(read, model.head(h))


def test_a_failed_write_leaves_no_partial_files(tiny: Path, tmp_path: Path, monkeypatch):
    """A disk that fills up while the entry is written: the load goes on and the folder keeps nothing of
    the attempt (partial files left on a full disk kept it full)."""
    cache = tmp_path / "cache"

    def full(source: Path, target: Path) -> None:
        target.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(weight_cache, "_align", full)
    rt = Runtime.load(tiny, device="cpu", cache=cache)
    assert torch.equal(_logits(rt), _logits(Runtime.load(tiny, device="cpu")))
    assert [p.name for p in (cache / "weights").iterdir()] == [weight_cache.LOCK]


@pytest.mark.parametrize("damage", ["fifo", "deep", "other-source"])
def test_a_sidecar_that_cannot_or_must_not_be_read_is_replaced(tiny: Path, tmp_path: Path, damage: str):
    """A FIFO where the sidecar should be (reading it would block), JSON nested too deep for the parser,
    or a sidecar naming another model file: none is used, none hangs or escapes, the entry is rebuilt."""
    cache = tmp_path / "cache"
    good = _logits(Runtime.load(tiny, device="cpu", cache=cache))
    _, sidecar = _entry(cache)
    if damage == "fifo":
        sidecar.unlink()
        os.mkfifo(sidecar)
    elif damage == "deep":
        sidecar.write_text("[" * 100_000 + "]" * 100_000)
    else:
        meta = json.loads(sidecar.read_text())
        sidecar.write_text(json.dumps({**meta, "source": str(tmp_path / "another.gguf")}))
    assert torch.equal(_logits(Runtime.load(tiny, device="cpu", cache=cache)), good)
    tensors, sidecar = _entry(cache)
    assert sidecar.is_file() and json.loads(sidecar.read_text())["source"] == str(tiny.resolve())


def test_the_entry_belongs_to_the_file_a_link_pointed_to_when_loading_began(tmp_path: Path):
    """The model path is resolved once: entries name the real file, and a link re-pointed to another
    model gets that model's entry, never the first one's."""
    first = write_tiny_gguf(tmp_path / "gemma.gguf", "gemma3")
    second = write_tiny_gguf(tmp_path / "llama.gguf", "llama")
    link, cache = tmp_path / "model.gguf", tmp_path / "cache"
    link.symlink_to(first)
    a = _logits(Runtime.load(link, device="cpu", cache=cache))
    link.unlink()
    link.symlink_to(second)
    b = _logits(Runtime.load(link, device="cpu", cache=cache))
    assert torch.equal(a, _logits(Runtime.load(first, device="cpu")))
    assert torch.equal(b, _logits(Runtime.load(second, device="cpu")))
    sources = {json.loads(p.read_text())["source"] for p in (cache / "weights").glob("*.json")}
    assert sources == {str(first.resolve()), str(second.resolve())}


def test_weights_stored_in_4_bit_blocks_get_int4_copies_even_beside_int8_ones(tmp_path: Path):
    """Q4_0 blocks sit on one affine grid per 32 weights, which an int4 copy holds up to the rounding of
    its scales: a closer copy than int8 per row, at 5 bits a weight instead of 8."""
    path = write_tiny_gguf(tmp_path / "q4.gguf", "gemma3", qtype="Q4_0")
    f = GGUFFile.open(path)
    config = model_config(f)
    assert len(four_bit_linears(f, config)) == 4 * config.n_layer  # wqkv, wo, gate_up, down
    rt = Runtime.load(path, device="cpu", decode_weights="int8")
    assert rt.model.decode_weights == "int4"  # every linear's blocks are 4-bit
    for linear in (rt.model.blocks[0].attn.wqkv, rt.model.blocks[0].mlp.down):
        eye = torch.eye(linear.in_features, dtype=torch.bfloat16)
        back = int4_matmul(eye, linear.int4, linear.int4_scales).float().T[: linear.out_features]
        q, scale = quantize_rows(linear.weight.detach())  # what an int8 copy would hold
        weight = linear.weight.float()
        int4_error = (back - weight).square().mean().sqrt()
        int8_error = (q.float() * scale.float()[:, None] - weight).square().mean().sqrt()
        assert int4_error < int8_error  # (4x closer on the default model's Q4_K tensors)


def test_an_entry_with_two_copies_of_one_weight_or_none_is_refused(tiny: Path):
    f = GGUFFile.open(tiny)
    config = model_config(f)
    state = weight_cache.from_gguf(tiny, torch.bfloat16, 8, fingerprints=False).state
    int4 = weight_cache.from_gguf(tiny, torch.bfloat16, 4, fingerprints=False).state
    check_state(config, state, "entry")
    check_state(config, int4, "entry")
    with pytest.raises(ModelLoadError, match="both an int4 and an int8 copy of blocks.0.attn.wqkv"):
        check_state(
            config, state | {k: v for k, v in int4.items() if k.startswith("blocks.0.attn.wqkv.int4")}, "e"
        )
    without = {k: v for k, v in state.items() if not k.startswith("blocks.1.mlp.down.int8")}
    with pytest.raises(ModelLoadError, match="lacks tensors"):
        check_state(config, without, "entry")
