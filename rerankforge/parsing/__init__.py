"""The parts of the parse stage: finding files, parsing one file, token-aware chunks, dedup, incremental state.

The stage itself (``rerankforge/stages/parse.py``) wires them together.
"""
