"""Labs: the lab profiles the service serves (``TBSEG_LABS_DIR``, one ``<lab_id>/profile.json`` each).

* ``registry``: the profiles, checked at start against the served models; which lab a request names (``lab=``, or
  the default lab of its API key's user).

The profile's format and its statistics are in :mod:`service.engine.lab_profile` (training writes it with
``python -m training lab-profile``); the slide decision that uses it is :mod:`service.engine.slide_decision`; the routes
are :mod:`service.api.routes.labs`.
"""
