//! mysql_redlock: read-write locks, semaphores and elections (filled in by issue 16's mysql_redlock work).
