"""Long jobs that survive restarts: fields persisted before the 202, run in the background, results kept a while.

A job holds one or more fields (optionally graded as a slide). :mod:`service.jobs.store` keeps them (SQLite and
files, persisted before the client hears 202); :mod:`service.jobs.runner` runs them field by field through the
service's inference gate and resumes interrupted ones after a restart.
"""
