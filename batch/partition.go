package batch

// PartitionFor is Kafka's choice of an internal topic's partition for a coordinator key (a group id
// in __consumer_offsets, a transactional id in __transaction_state): abs(javaHashCode(key)) %
// partitions, with abs(MinInt32) = 0, so Kafka's tools and clients agree with us on it.
func PartitionFor(key string, partitions int32) int32 {
	var h int32
	for _, r := range key {
		if r >= 0x10000 { // a surrogate pair in Java's UTF-16 string
			r -= 0x10000
			h = 31*h + int32(0xD800+(r>>10))
			h = 31*h + int32(0xDC00+(r&0x3FF))
			continue
		}
		h = 31*h + int32(r)
	}
	if h == -1<<31 {
		h = 0
	} else if h < 0 {
		h = -h
	}
	return h % partitions
}
