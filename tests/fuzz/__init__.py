"""The fuzzing harness (issue 28): targets.py names each reader and what it may raise; scripts/fuzz.py
fuzzes them with atheris (``make fuzz``); test_corpus.py replays the seeds and every crash ever found;
test_properties.py drives the same readers with hypothesis (``HYPOTHESIS_PROFILE=fuzz`` for a long run)."""
