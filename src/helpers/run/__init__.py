"""The run machinery: atomic writes, project paths, params, the phase graph, phases in a kernel, manifests,
run records and the papermill runner. Imports nothing of the domain.
"""
