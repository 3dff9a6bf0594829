"""`dsr-jax <command> ...`: one console script for every entry point (installed by pip; see pyproject.toml).

  dsr-jax train   --config default --workdir W [--config.a.b=v ...]   (python -m dsr_jax.main)
  dsr-jax eval    --config eval:middlebury2005 --workdir W --config.eval.checkpoint_dir=C
  dsr-jax predict --checkpoint C --input x.png --output out/          (python -m dsr_jax.predict)
  dsr-jax export | bench | study ...                                  (python -m dsr_jax.<command>)

`--config` takes a file or the name of an installed config (`default`, `cpu_real:x4,ct`).
"""
import os
import sys

COMMANDS = ('train', 'eval', 'predict', 'export', 'bench', 'study')


def _exit(status: int) -> None:
  # As `python -m dsr_jax.predict` does: a refused run ends before interpreter shutdown, where leftovers of a
  # failed Orbax restore would print tracebacks.
  sys.stdout.flush()
  sys.stderr.flush()
  if status:
    os._exit(status)  # pylint: disable=protected-access
  sys.exit(0)


def main(argv=None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] not in COMMANDS:
    got = f' {argv[1]!r}' if len(argv) > 1 and argv[1] not in ('-h', '--help') else ''
    print(f'error: expected a command{got}: one of {", ".join(COMMANDS)} (e.g. dsr-jax train --config '
          'default --workdir runs/x)', file=sys.stderr)
    sys.exit(2 if got or len(argv) < 2 else 0)
  command, rest = argv[1], argv[2:]
  prog = f'dsr-jax {command}'
  if command in ('train', 'eval'):
    import runpy  # pylint: disable=g-import-not-at-top
    # Exactly `python -m dsr_jax.main` (config_flags defines its --config.* override flags only for the
    # __main__ module). The command fixes the mode: `dsr-jax eval` never trains.
    sys.argv = [prog, *rest, f'--config.mode={command}']
    runpy.run_module('dsr_jax.main', run_name='__main__', alter_sys=True)
    return
  import importlib  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f'dsr_jax.{command}')
  sys.argv[0] = prog
  _exit(module.main(rest) or 0)


if __name__ == '__main__':
  main()
