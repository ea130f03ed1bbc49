DROP TABLE saga_steps;
DROP TABLE sagas;
