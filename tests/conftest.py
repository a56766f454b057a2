"""Shared test fixtures: a real multi-process torch.distributed run on CPU (gloo)."""

from __future__ import annotations

import importlib.util
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
import types
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DISTRIBUTED_TIMEOUT = timedelta(seconds=60)


def free_port() -> int:
    """A TCP port that was free a moment ago: the OS picks it when binding to port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _join_process_group(
    rank: int, world_size: int, port: int, worker: Callable[..., None], args: tuple
) -> None:
    """Entry point of each spawned process: join the gloo group, run ``worker``, leave cleanly."""
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=DISTRIBUTED_TIMEOUT)
    try:
        worker(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


@contextmanager
def _importable_in_children(function: Callable[..., None]) -> Iterator[None]:
    """Put the folder ``function``'s module imports from on ``sys.path`` while children start.

    Spawned children unpickle ``function`` by importing its module by name with the parent's
    ``sys.path``; under ``--import-mode=importlib`` the repository root is only on it when pytest
    runs as ``python -m pytest`` from there, so add it for the launch and take it off afterwards.
    """
    module_file = Path(inspect.getfile(function)).resolve()
    import_root = str(module_file.parents[function.__module__.count(".")])
    added = import_root not in sys.path
    if added:
        sys.path.insert(0, import_root)
    try:
        yield
    finally:
        if added:
            sys.path.remove(import_root)


def run_distributed(worker: Callable[..., None], *args: object, world_size: int = 2) -> None:
    """Run ``worker(rank, world_size, *args)`` in ``world_size`` fresh processes joined by gloo.

    ``worker`` must be a module-level function (it is pickled by name into the children); it
    reports back by writing files, typically into a ``tmp_path`` passed in ``args``. A failure in
    any process is raised here with that process's traceback.
    """
    with _importable_in_children(worker):
        mp.spawn(
            _join_process_group,
            args=(world_size, free_port(), worker, args),
            nprocs=world_size,
            join=True,
        )


@pytest.fixture(scope="session")
def distributed_run() -> Callable[..., None]:
    """:func:`run_distributed`, handed to tests as a fixture (conftest is not importable)."""
    return run_distributed


@pytest.fixture
def pick_free_port() -> Callable[[], int]:
    """:func:`free_port`, for tests that start their own launchers (conftest is not importable)."""
    return free_port


def _checkpoint_position(path: Path) -> tuple[int, int]:
    """(step, batch_in_epoch) of the checkpoint at ``path``; (-1, -1) while it is not readable."""
    from sslvision.engine.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except Exception:
        return -1, -1
    return ckpt["step"], ckpt["batch_in_epoch"]


def kill_mid_epoch(run: subprocess.Popen, checkpoint: Path, after_step: int) -> int:
    """SIGKILL ``run`` (its whole process group if it leads one) once ``checkpoint`` was saved
    inside an epoch at or after ``after_step``; return the step that checkpoint holds."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        step, batch = _checkpoint_position(checkpoint)
        if step >= after_step and batch > 0:
            break
        assert run.poll() is None, run.stderr.read()[-4000:]
        time.sleep(0.05)
    workers = _descendants(run.pid)  # a launcher's workers: on some machines they outlive it
    if os.getpgid(run.pid) == run.pid:  # a launcher started in its own session, with its workers
        os.killpg(run.pid, signal.SIGKILL)
    else:
        run.send_signal(signal.SIGKILL)
    for pid in workers:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    run.wait()
    return _checkpoint_position(checkpoint)[0]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from Linux's /proc (none elsewhere)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found, stack = [], [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


@pytest.fixture
def sigkill_mid_epoch() -> Callable[[subprocess.Popen, Path, int], int]:
    """:func:`kill_mid_epoch`, handed to tests as a fixture (conftest is not importable)."""
    return kill_mid_epoch


@pytest.fixture(scope="session")
def load_benchmark() -> Iterator[Callable[[str], types.ModuleType]]:
    """Import a script of ``benchmarks/`` by name; they are scripts, not a package."""
    loaded: list[str] = []

    def load(name: str) -> types.ModuleType:
        if name not in sys.modules:
            path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses look their module up while it executes
            spec.loader.exec_module(module)
            loaded.append(name)
        return sys.modules[name]

    yield load
    for name in loaded:
        del sys.modules[name]


def _write_voc(root: Path, images: dict, split: str = "train") -> Path:
    """A VOC-layout folder (JPEGImages/ with PNG content, Annotations/, ImageSets/Main/).

    ``images`` maps a stem to (width, height, [(class, xmin, ymin, xmax, ymax, difficult), ...]);
    each box is painted in a colour of its class on a dark image, so a detector can learn them.
    """
    from torchvision.io import write_png

    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    classes = sorted({obj[0] for _, _, objects in images.values() for obj in objects})
    for stem, (width, height, objects) in images.items():
        image = torch.full((3, height, width), 20, dtype=torch.uint8)
        annotation = ET.Element("annotation")
        ET.SubElement(annotation, "filename").text = f"{stem}.png"
        for name, *box, difficult in objects:
            x0, y0, x1, y1 = box
            image[classes.index(name) % 3, y0:y1, x0:x1] = 230
            obj = ET.SubElement(annotation, "object")
            ET.SubElement(obj, "name").text = name
            ET.SubElement(obj, "difficult").text = str(int(difficult))
            bndbox = ET.SubElement(obj, "bndbox")
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
                ET.SubElement(bndbox, tag).text = str(value)
        write_png(image, str(root / "JPEGImages" / f"{stem}.png"))
        ET.ElementTree(annotation).write(root / "Annotations" / f"{stem}.xml")
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    listing.write_text("\n".join(images) + "\n")
    return root


@pytest.fixture
def write_voc() -> Callable[..., Path]:
    """Writes a small VOC-layout dataset: ``write_voc(root, images, split="train")``."""
    return _write_voc


@pytest.fixture
def scratch_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The project's registries, each found in full, forgetting whatever the test registers."""
    from sslvision import registry

    for value in vars(registry).values():
        if isinstance(value, registry.Registry):
            value.names()  # find the package's own members first, so that the copy holds them
            monkeypatch.setattr(value, "_members", dict(value._members))


COLOURS = {"apple": (255, 0, 0), "banana": (255, 255, 0), "cherry": (0, 0, 255)}


def _write_colour_folder(
    root: Path, classes: list[str] | None = None, per_class: int = 4, size: int = 16
) -> Path:
    """An ImageFolder split of flat-colour PNGs, each its class's colour plus a little noise
    (classes from ``COLOURS``), so that even a random network separates them."""
    from torchvision.io import write_png

    classes = list(COLOURS) if classes is None else classes
    generator = torch.Generator().manual_seed(len(classes) * 1000 + per_class)
    for name in classes:
        (root / name).mkdir(parents=True)
        colour = torch.tensor(COLOURS[name], dtype=torch.float32).view(3, 1, 1)
        for i in range(per_class):
            noise = torch.randint(-8, 9, (3, size, size), generator=generator)
            write_png((colour + noise).clamp(0, 255).to(torch.uint8), str(root / name / f"{i}.png"))
    return root


@pytest.fixture
def colour_folder() -> Callable[..., Path]:
    """Writes a flat-colour ImageFolder split: ``colour_folder(root, classes, per_class, size)``."""
    return _write_colour_folder


def _stop_at(step: int, reason: str = "preempted"):
    """A callback that asks the Trainer to stop after optimiser step ``step``."""
    from sslvision.engine.loop import Callback

    class StopAt(Callback):
        def on_step_end(self, trainer) -> None:
            if trainer.state.step == step:
                trainer.request_stop(reason)

    return StopAt()


@pytest.fixture
def stop_at() -> Callable[..., object]:
    """``stop_at(step, reason="preempted")``: a callback stopping a run as a signal would."""
    return _stop_at
