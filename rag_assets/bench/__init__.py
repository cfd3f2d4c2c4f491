"""`rag-assets bench`: the pipeline against its limit (bare encode) and its ancestor (naive), in one
process.
"""
