package imagefactory

import (
	"github.com/hashicorp/packer-plugin-sdk/common"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"
)

type wrappedCommandData struct {
	Command string
}

// wrapper renders command_wrapper around a host command.
func (c *Config) wrapper() common.CommandWrapper {
	return func(command string) (string, error) {
		ictx := c.ctx
		ictx.Data = &wrappedCommandData{Command: command}
		return interpolate.Render(c.CommandWrapper, &ictx)
	}
}
