"""The fleet side: verified telemetry from many vehicles into PostgreSQL, campaigns out, service due.

Needs the `fleet` extra (`pip install 'firmware-agent[fleet]'`: psycopg 3); the car's daemon never imports it.
"""
