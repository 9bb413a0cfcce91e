"""Alert dispatch: from the Kafka ``alerts`` topic to bank staff and customers.

* ``contract``   - the Alert model (the detection engine produces it), wire format, ids
* ``config``     - config/alerting.yaml: routes, recipients, channels, retries, throttle
* ``routing``    - which recipients and channels an alert goes to
* ``render``     - Jinja2 templates (``templates/``), masked views, SMS fitting (``segments``)
* ``channels/``  - email (SMTP), sms (Twilio-shaped HTTP gateway), webhook (chat)
* ``delivery``   - idempotent delivery with retries/backoff and the delivery log
* ``circuit``    - per-channel circuit breakers (closed, open, half-open probe)
* ``throttle``   - per account+rule windows folding alert storms into one follow-up
* ``dispatcher`` - the consumer loop (``txmon alerts dispatch``)
* ``retry``      - second chances: deferred deliveries parked in the dispatcher until their
                   channel is back; failed ones, retried by the DAG (``txmon alerts retry-failed``)
* ``digest``     - the daily summary email with a chart (``txmon alerts digest --date``)
* ``store``      - Cassandra tables of infra/schema.cql ("Alerting")
* ``testing``    - local SMTP server, SMS gateway and webhook stand-ins for tests and benchmarks
"""
