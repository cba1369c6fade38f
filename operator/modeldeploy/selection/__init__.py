"""Engine selection: node facts and a ModelDeployment spec in, a Decision out. Pure, no I/O."""
