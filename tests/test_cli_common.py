"""The command line's error handling (cli/_common.py): decoder, allocation and unexpected errors as one line
with an exit status, the traceback on demand, and autograph's wrapper stripped from a message."""
import cv2
import pytest

from keras_cam import cli
from tests.helpers import text_lines


class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError's name, without importing torch
    pass


@pytest.mark.parametrize("error, line", [
    (MemoryError(), "out of memory (MemoryError)"),
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 28.00 GiB"),
     "out of memory (CUDA out of memory."),
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 30000000000 bytes."),
     "out of memory (RESOURCE_EXHAUSTED: Out of memory while trying to allocate 30000000000 bytes.)"),
    (cv2.error("OpenCV(5.0.0) /io/opencv/modules/core/src/alloc.cpp:73: error: (-4:Insufficient memory) "
               "Failed to allocate 30000000000 bytes in function 'OutOfMemoryError'\n"),
     "out of memory ((-4:Insufficient memory) Failed to allocate 30000000000 bytes in function"),
    (cv2.error("OpenCV(5.0.0) /io/x.cpp:79: error: (-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS "
               "in function 'validateInputImageSize'\n"),
     "(-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS in function 'validateInputImageSize'"),
])
def test_decoder_and_allocation_errors_are_one_line(cli_files, monkeypatch, capsys, error, line):
    _, path, _, _ = cli_files

    def run(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "filters", cli.COMMANDS["filters"]._replace(run=run))
    assert cli.main(["filters", path, "--layer", "conv"]) == 2
    err = text_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith(f"keras-cam: error: {line}")


def test_an_unexpected_error_is_one_line_and_debug_shows_its_traceback(cli_files, monkeypatch, capsys):
    _, path, _, _ = cli_files

    def run(args):
        raise KeyError("boom")

    monkeypatch.setitem(cli.COMMANDS, "filters", cli.COMMANDS["filters"]._replace(run=run))
    assert cli.main(["filters", path, "--layer", "conv"]) == cli.INTERNAL_ERROR == 3
    line = "keras-cam: error: KeyError: 'boom' (unexpected: set KERAS_CAM_DEBUG=1 for the traceback)"
    assert text_lines(capsys.readouterr().err) == [line]
    monkeypatch.setenv("KERAS_CAM_DEBUG", "1")
    assert cli.main(["filters", path, "--layer", "conv"]) == 3
    err = text_lines(capsys.readouterr().err)
    assert err[0] == "Traceback (most recent call last):"
    assert err[-2:] == ["KeyError: 'boom'", line]


def test_autograph_wrappers_are_stripped_to_the_original_message():
    wrapped = ValueError(
        'in user code:\n\n    File "/x/keras_cam/explainers/base.py", line 251, in fn  *\n        a = f(x)\n'
        '    File "/x/keras_cam/targets.py", line 172, in _select  *\n        raise ValueError(f"...")\n\n'
        "    ValueError: Output index 5 is out of range:\n    the model has 2 outputs.\n")
    assert cli._common.one_line(wrapped) == "Output index 5 is out of range: the model has 2 outputs."
    assert cli._common.one_line(TypeError(str(wrapped).replace("ValueError: ", "KeyError: "))) == (
        "KeyError: Output index 5 is out of range: the model has 2 outputs.")
    assert cli._common.one_line(ValueError("plain\n  message")) == "plain message"
