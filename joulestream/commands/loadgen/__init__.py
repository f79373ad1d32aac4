"""``joulestream loadgen``: a simulated fleet publishing NodeSamples and PowerReadings.

The fleet model (``fleet``), its byte-exact fast encoder (``encoder``), the publishing
schedule and its statistics (``schedule``) and the command line (``cli``).
"""
