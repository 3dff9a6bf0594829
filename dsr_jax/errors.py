"""User-facing errors: anything caused by a user's input, file or config.

Entry points catch `UserError` and print its one-line message with exit status 2 (no traceback). Library
code raises it with a message that names the file or field and what was expected.
"""
import argparse
import os


class UserError(ValueError):
  """A mistake in the user's input, files or config; its message is one line."""


class DataError(UserError):
  """Bad or missing data: names the file or directory and what was expected."""


class ConfigError(UserError):
  """A config field out of range: names the field and the allowed values."""


class CheckpointWriteError(UserError):
  """A checkpoint could not be written (a full disk, a directory turned read-only); the message says where.

  main exits at once on it: Orbax's writer threads that met the failure would hold the interpreter's exit.
  """


def one_line(e: BaseException, limit: int = 200) -> str:
  """'Type: message' with whitespace collapsed and the message cut to `limit` characters."""
  text = ' '.join(str(e).split())
  if len(text) > limit:  # Cut at a word, and say so.
    text = text[:limit].rsplit(' ', 1)[0] + ' ...'
  return f'{type(e).__name__}: {text}' if text else type(e).__name__


class ArgumentParser(argparse.ArgumentParser):
  """argparse, but a usage mistake is one line on stderr (exit status 2), like every other error."""

  def error(self, message):
    self.exit(2, f'error: {message} (see --help)\n')


def positive_int(text: str) -> int:
  """argparse type for counts and sizes (a 0 would divide by zero or time nothing)."""
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f'{text!r}: expected a positive integer')
  return value


def check_backend() -> None:
  """Starts JAX's backend now, turning a failure into one UserError that names JAX_PLATFORMS.

  Main, predict and export call it before their first use of JAX: left to the first jax.devices() inside
  Orbax or the training loop, `JAX_PLATFORMS=cuda` on a machine without CUDA surfaces as a double traceback
  or, caught by a checkpoint read, as a damaged checkpoint.
  """
  # jax (a second or more to import) only here: every CLI imports this module to parse its arguments.
  import jax  # pylint: disable=g-import-not-at-top  (jax: see above)
  from jax.extend import backend  # pylint: disable=g-import-not-at-top  (jax: see above)
  try:
    jax.devices()
    return
  except Exception as e:  # pylint: disable=broad-except  (RuntimeError, or a bare AssertionError for 'cuda')
    error = e
  wanted = jax.config.jax_platforms or os.environ.get('JAX_PLATFORMS', '')
  try:  # What starts when JAX picks for itself: the platforms this machine does offer.
    backend.clear_backends()
    jax.config.update('jax_platforms', None)
    offered = ', '.join(sorted(backend.backends()))
  except Exception:  # pylint: disable=broad-except
    offered = 'none that JAX can start'
  reason = one_line(error, 120)
  if wanted:
    raise UserError(f'JAX_PLATFORMS={wanted!r}: JAX cannot start that backend ({reason}); this machine offers: '
                    f'{offered} (unset JAX_PLATFORMS or set it to one of those)')
  raise UserError(f'JAX cannot start a backend ({reason}); JAX_PLATFORMS is unset; this machine offers: '
                  f'{offered}')
