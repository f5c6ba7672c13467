"""Known-wrong implementations (mutants), one module per stage: ``stageNN.py``.

Each module defines ``MUTANTS``: name -> (impl, fragment).  ``impl`` is what a learner might
really write, shaped like the exercise module (an object with the same public names);
``fragment`` is a piece of text the check's diagnostic must contain, i.e. the check must not
only fail but *name* the mistake.  tests/test_mutants.py runs them all.
"""
