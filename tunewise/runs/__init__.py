"""The run folder: what a run writes where (`layout`), the rule that nothing in it is replaced without
being asked (`guard`), what makes a run replayable (`record`), and reading a finished run back (`reader`)."""
