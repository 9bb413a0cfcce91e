"""The fraud desk's console: alert queue, cases, dispositions that become labels,
insights and dashboards, served under ``/console`` by the web application
(:func:`txmon.webapp.console.web.console_router`)."""
