"""One quiet console for every command: TensorFlow's own log lines off unless asked for.

TensorFlow 2.21 writes to the console through four channels, and no single switch covers them
(measured on a CPU-only host, `import tensorflow` then one TFLite conversion and one LiteRT
interpreter):

- absl C++ logging, which before anything calls `absl::InitializeLog` writes *every* severity
  to file descriptor 2 and ignores TF_CPP_MIN_LOG_LEVEL: `port.cc] oneDNN custom operations are
  on`, `cudart_stub.cc] Could not find cuda drivers` (twice: two shared libraries carry their own
  absl) while `import tensorflow` runs, and `cuda_platform.cc] failed call to cuInit` when the
  devices are first listed. Nothing in Python can turn these off, so fd 2 is captured while they
  are written (`native_quiet`) and everything but them is written back.
- TensorFlow's C++ logging (`cpu_feature_guard.cc] This TensorFlow binary is optimized...`, the
  MLIR converter's pages): TF_CPP_MIN_LOG_LEVEL, read when TensorFlow loads.
- TensorFlow's Python logger `tensorflow` (seven INFO lines per converted model: `lite.py] Using
  new converter`, `builder_impl.py] Assets written to`, ...): at INFO as soon as `absl.app` runs.
- The TFLite runtime's own logger (`INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`,
  once per process at the first interpreter) and the int8 quantizer's plain print (`fully_quantize:
  0, inference_type: 6, ...`): no switch; `native_quiet` around the interpreter and the converter.

`install()` (run by `import proxyless_tf`) sets up the quiet default before TensorFlow loads;
`configure(verbosity)` (run by every entry point after its flags are parsed) applies absl's
`--verbosity`: given on the command line it brings TensorFlow's lines back at that level, in this
process and (through PROXYLESS_TF_VERBOSITY) in the child processes it starts.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

ENV = "PROXYLESS_TF_VERBOSITY"  # an explicit --verbosity, inherited by child processes

# Lines of TensorFlow's and TFLite's native loggers that say nothing a user can act on.
_NOISE = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.+-]+:\d+\]"           # absl/TF INFO and WARNING records
    r"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ cuda\w*\.cc:\d+\] failed call to cuInit"  # no GPU on this host
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    r"|fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+$)")

_verbosity = None  # None: quiet (the default); else absl's --verbosity (0 INFO, -1 WARNING, ...)


def _env_verbosity():
    try:
        return int(os.environ[ENV])
    except (KeyError, ValueError):
        return None


def is_quiet():
    return _verbosity is None


def cpp_level(verbosity):
    """absl --verbosity -> TF_CPP_MIN_LOG_LEVEL (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL)."""
    return min(3, max(0, -verbosity))


def is_noise(line):
    return bool(_NOISE.match(line))


@contextlib.contextmanager
def native_quiet():
    """Capture fd 2 while native code writes its log lines; write back all but `is_noise` ones.

    A no-op when TensorFlow's lines were asked for (`configure` with a verbosity). Python
    exceptions pass through untouched; only what was written to fd 2 meanwhile is filtered.
    """
    if _verbosity is not None:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 (a detached process): nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError, AttributeError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [l for l in tmp.read().decode("utf-8", "replace").splitlines(True) if not is_noise(l)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _python_loggers():
    """TensorFlow's Python logger: ERROR when quiet, else absl's verbosity decides."""
    logging.getLogger("tensorflow").setLevel(logging.ERROR if _verbosity is None else logging.NOTSET)


class _QuietTensorFlowImport:
    """`sys.meta_path` finder: the first `import tensorflow` (and its first device listing, where
    the cuInit line comes from) runs inside `native_quiet`. Removes itself once used."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec(module):
            with native_quiet():
                exec_module(module)
                try:  # physical devices only: logical device setup (distribute.py) stays possible
                    module.config.list_physical_devices()
                except Exception:  # noqa: BLE001 - device trouble surfaces at the first real op
                    pass
            _python_loggers()

        spec.loader.exec_module = quiet_exec
        return spec


def install():
    """The quiet default, before TensorFlow loads (called by `import proxyless_tf`)."""
    global _verbosity
    _verbosity = _env_verbosity()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if _verbosity is None else str(cpp_level(_verbosity)))
    _python_loggers()
    if _verbosity is None and "tensorflow" not in sys.modules and \
            not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def configure(verbosity=None):
    """Apply absl's `--verbosity` when it was given (None: quiet, or what a parent process asked).

    Quiet also lowers absl's Python logging to WARNING: `absl.app` sets it to INFO, which lets
    tensorflow_datasets and friends print their INFO lines.
    """
    global _verbosity
    from absl import logging as absl_logging

    if verbosity is None:
        verbosity = _env_verbosity()
    _verbosity = verbosity
    if verbosity is None:
        absl_logging.set_verbosity(absl_logging.WARNING)
    else:
        os.environ[ENV] = str(verbosity)
        if "tensorflow" not in sys.modules:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(cpp_level(verbosity))
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowImport)]
    _python_loggers()


def configure_from_flags(flag_values=None):
    """`configure` with absl's --verbosity if it was on the command line (or in a flag file)."""
    if flag_values is None:
        from absl import flags

        flag_values = flags.FLAGS
    present = "verbosity" in flag_values and flag_values["verbosity"].present
    configure(flag_values.verbosity if present else None)



def after_flags(main):
    """`main` of an absl entry point, run after `configure_from_flags` (flagfiles.run uses it)."""
    def run(argv):
        configure_from_flags()
        return main(argv)

    return run
