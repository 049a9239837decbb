"""The five scenarios of the benchmark; each fills a `report.ScenarioResult`."""
