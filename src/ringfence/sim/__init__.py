"""The fleet simulator: any plan, and the strategies people use today, against real-scale faults
on millions of simulated hosts, with the same engine, plans and judges as the server."""
