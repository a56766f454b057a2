"""One module per evaluator's command line, each registering an :class:`Evaluator` subclass."""
