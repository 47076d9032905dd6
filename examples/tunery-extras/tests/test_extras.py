"""The conformance kits of every family, run on this package's members."""

from tunery.testing import (EvaluatorConformance, ExtensionConformance, FormatterConformance, MethodConformance,
                            ObjectiveConformance)


class TestLnFit(MethodConformance):
    method = "lnfit"
    learning_rate = 5e-2


class TestFocal(ObjectiveConformance):
    objective = "focal"
    options = {"gamma": 1.0}
    learning_rate = 1e-2


class TestShrink(ExtensionConformance):
    extension = "shrink"
    options = {"weight": 1e-4}


class TestQA(FormatterConformance):
    format = "qa"
    good = [{"question": "What is 2 plus 2?", "answer": "4"}, {"question": "Capital of France?", "answer": "Paris"}]
    bad = [({"question": "No answer here", "answer": ""}, "empty text")]
    trained = [" 4<|endoftext|>", " Paris<|endoftext|>"]


class TestFastQA(FormatterConformance):
    format = "qa_fast"
    good = [{"question": "What is 2 plus 2?", "answer": "4"}, {"question": "Capital of France?", "answer": "Paris"}]
    bad = [({"question": "No answer here", "answer": ""}, "empty text")]
    trained = [" 4<|endoftext|>", " Paris<|endoftext|>"]


class TestTokenAccuracy(EvaluatorConformance):
    evaluator = "token_accuracy"
