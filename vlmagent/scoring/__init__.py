"""The batch website scorer behind `vlmagent score`: site folders (sites.py) and model responses
(responses.py) become jobs for one runner (runner.py), which writes results.jsonl and the HTML
report (report.py)."""
