"""Stage checks: ``stage{id}.py`` per stage, run by ``harness.run_check``."""
