"""txmon's web application: the real-time scoring API (``webapp/api``) and the fraud-desk
console (``webapp/console``), served by one ASGI app (:func:`txmon.webapp.app.create_app`).

Layer: the top, beside the command line. It imports the domain (features, rules, models)
and the edges (Cassandra, Kafka); nothing below imports it.
"""
