"""User-facing errors: anything caused by a user's input, file or config.

Entry points catch `UserError` and print its one-line message with exit status 2 (no traceback). Library
code raises it with a message that names the file or field and what was expected.
"""
import argparse


class UserError(ValueError):
  """A mistake in the user's input, files or config; its message is one line."""


class DataError(UserError):
  """Bad or missing data: names the file or directory and what was expected."""


class ConfigError(UserError):
  """A config field out of range: names the field and the allowed values."""


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
