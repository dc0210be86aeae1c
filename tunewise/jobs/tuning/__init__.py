"""The pieces of the tune job (`tunewise.jobs.tune`): the space, the study, one trial, the processes' channel,
the final test and the study's files."""
