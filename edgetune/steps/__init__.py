"""The steps of a run, in the order pipeline.STEPS runs them: train/ -> merge -> convert (edgetune.convert)
-> quantize/ -> smoke -> report. Each step reads and writes its files through runs.RunFolder and returns
the typed record of results.py."""
