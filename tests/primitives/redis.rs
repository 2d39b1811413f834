//! redis: read-write locks, semaphores and elections (filled in by issue 16's redis work).
