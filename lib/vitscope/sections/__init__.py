"""Book orchestration: one module per paper section, turning (profile, models) into tidy result tables.

Each ``compute`` function loads models, extracts through the feature store and calls kernels; notebooks
call these and plot the tables. Nothing here draws or writes pages.
"""
