"""A Ctrl-C that library code swallows still stops the work at the next checkpoint."""

from __future__ import annotations

import os
import signal
import time

import pytest

from dfmx import interrupts


def _swallowing_library_call() -> None:
    """What some libraries do: catch everything, the interrupt included."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises here, at once
    except BaseException:
        pass


def test_a_swallowed_signal_is_raised_again_at_the_next_check() -> None:
    previous = interrupts.install()
    try:
        interrupts.check()  # nothing received: a no-op
        started = time.monotonic()
        _swallowing_library_call()
        assert time.monotonic() - started < 4
        with pytest.raises(interrupts.Interrupted) as raised:
            interrupts.check()
        assert raised.value.exit_code == 130 and raised.value.signal_name == "SIGINT"
    finally:
        interrupts.restore(previous)
    interrupts.check()  # restore() forgets it
    assert signal.getsignal(signal.SIGINT) is previous[signal.SIGINT]


def test_image_batches_stop_after_a_swallowed_signal(tmp_path) -> None:
    from PIL import Image

    from dfmx import DFMModel
    from dfmx.data import Sample
    from dfmx.experiment.predict import model_batches

    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(path)
        paths.append(path)
    samples = [Sample(path=p, label=0, defect_type="good") for p in paths]
    model = DFMModel("efficientnet_lite0", "blocks.2", pre_trained=False)
    previous = interrupts.install()
    try:
        with model_batches(model, samples, 32, 1, 0, "test") as batches:
            next(batches)
            _swallowing_library_call()
            with pytest.raises(interrupts.Interrupted):
                next(batches)
    finally:
        interrupts.restore(previous)


def test_an_error_raised_in_place_of_the_interrupt_is_the_interrupt() -> None:
    """matplotlib's C extension turns a Ctrl-C during its import into ``ImportError:
    initialization failed``; once a signal has arrived, such an error is the interrupt."""
    previous = interrupts.install()
    try:
        other = ValueError("no signal yet")
        assert interrupts.as_interrupt(other) is other
        try:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except KeyboardInterrupt as exc:
                raise ImportError("initialization failed") from exc
        except ImportError as exc:
            caught = exc
        interrupt = interrupts.as_interrupt(caught)
        assert isinstance(interrupt, interrupts.Interrupted) and interrupt.exit_code == 130
        assert interrupt.__cause__ is caught
    finally:
        interrupts.restore(previous)
