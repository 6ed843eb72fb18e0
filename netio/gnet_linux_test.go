package netio

func setGnetCopyWhenFull(on bool) bool {
	gnetCopyWhenFull = on
	return true
}
